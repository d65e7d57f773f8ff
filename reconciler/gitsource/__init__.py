"""The Git source: fetching the fleet repository, verifying signatures, finding approvals.

    trust.py      the trust root (principals, roles, SSH / OpenPGP keys with validity windows)
    verify.py     commit signatures checked by git against the trust root, cached by SHA
    recovery.py   moving past unverified commits: signed reverts and `Hotswap-Adopt:` adoptions
    approving.py  signed `Hotswap-Approve:` commits and signed merges -> reconciler.spec.approvals records
    source.py     GitSource: fetch, parse (the spec loader), verify, approvals -> Revision + status
    status.py     Flux-like conditions (Ready / Stalled with UnverifiedCommit, InvalidFleet, ...)
    webhook.py    POST /api/v1/wasm/webhook (HMAC-SHA256) -> GitSource.trigger()
    gitrepo.py    the thin seam over GitPython every git call goes through
    gitwrite.py   API writes (approvals, update automation) as signed commits pushed to the branch
    oci.py        the other source of binaries: OCI registries (pull, push, tags)
    errors.py     the exception tree

Wiring in a control plane:

    trust = load_trust(Path(args.trust))
    source = GitSource(SourceConfig(url, branch, path, interval), trust, data_dir / "git")
    app.router.add_post(WEBHOOK_PATH, webhook_handler(secret, source.trigger, branch=branch))
    task = asyncio.create_task(source.run(on_revision))   # on_revision(Revision) per good revision
    source.status().to_json()                             # GET /api/v1/wasm/source
"""
