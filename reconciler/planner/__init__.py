"""The planner: a pure function from desired fleet, observed nodes, rollout records and now to actions."""
