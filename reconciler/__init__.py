"""The control plane: Git source, fleet spec, planner, executor, stores, API and CLI verbs."""
