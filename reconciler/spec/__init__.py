"""The fleet as users write it: YAML documents -> validated models -> a `DesiredFleet`.

loader.py       load_fleet: every document under a fleet root -> a DesiredFleet, or every problem
documents.py    find and parse the YAML files, keeping line numbers; validate each document
assemble.py     what no single document can check (names, references, versions)
sources.py      where a version's binary comes from (a path in the repository or an OCI reference)
incremental.py  parse only the files a commit changed
models.py       Module, Interface, Strategy, Fleet documents (pydantic) and their fields
fleet.py        DesiredFleet and Problem
approvals.py    approvals as facts about a revision, and the rule that says whether enough were given
admission.py    whether a binary can run on the edge sandbox within its limits (loader and registry)
ocireference.py an OCI reference, parsed and checked
conditions.py   Condition: what the control plane says of an object (Flux-style), one type for all
"""
