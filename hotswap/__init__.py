"""hotswap: the command-line entry point.

The `hotswap` console script lands in `hotswap.cli`, which imports only the module that serves the
verb asked for: `validate` must start fast, and the edge verbs must not pull in the control plane.
This package is the composition root; `edge` and `reconciler` never import it.
"""
