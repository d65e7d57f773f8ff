"""The Git source: fetching the fleet repository, verifying signatures, finding approvals."""
