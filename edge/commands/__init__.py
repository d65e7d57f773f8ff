"""The verbs of the `hotswap` command that run the edge runtime (`exec`, `edge`)."""
