"""The verbs of the `hotswap` command that live in the control plane."""
