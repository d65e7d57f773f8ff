"""The control plane's HTTP API (aiohttp): the routes, and the tokens that guard them.

app.py        the application: routes, middlewares (auth, body limits, rate limits, errors)
auth.py       tokens: the keys under `--data-dir`, minting and verification
authnames.py  the names tokens carry (issuer, audiences, roles) and where the keys live
openapi.py    the OpenAPI document served at /api/v1/openapi.json
control.py    the node protocol's routes (register, heartbeat, assignment long-poll)
the others    one file per resource: modules, deployments, interfaces, diff, execute, observe
"""
