// Fleet: the followed revision (commit, author, signer, verified or why not), the source's
// conditions, counts of modules, rollouts in progress and nodes by health, and what needs a person
// now (approvals waited for, paused or stalled rollouts, unhealthy nodes, a stalled source).
// Live: refreshed on `pass`, `event` and `nodes` messages.
//
// Reads GET /api/v1/wasm/status (which carries GET /api/v1/wasm/source's answer as `source`) and,
// for the commit's author and message when the source does not give them, GET /api/v1/wasm/diff
// for the followed head (once per revision).

import { ApiError, api, badge, facts, fill, fmt, h, heading, problem, throttle } from "../lib.js";

const ACTIVE = new Set(["Pending", "WaitingApproval", "Progressing", "Paused"]);
const enc = encodeURIComponent;

function rolloutLink(r) {
  return h("a", { href: `#/rollouts/${enc(r.id)}` }, r.id);
}

function condition(list, type) {
  return (list || []).find((c) => c.type === type);
}

// What needs a person now, most urgent first: [{tone, text: [nodes], key}].
export function needsAttention(status) {
  const items = [];
  const source = status.source || {};
  const sourceStalled = condition(source.conditions, "Stalled");
  if (sourceStalled && sourceStalled.status === "True") {
    items.push({ tone: "bad", kind: "source", text: [h("strong", {}, "Source stalled: "), `${sourceStalled.reason}: ${sourceStalled.message}`] });
  } else {
    const ready = condition(source.conditions, "Ready");
    if (ready && ready.status === "False" && source.lastAppliedRevision) {
      items.push({ tone: "warn", kind: "source", text: [h("strong", {}, "Source not ready: "), `${ready.reason}: ${ready.message}`] });
    }
  }
  if (status.stalled && status.stalled.status === "True") {
    items.push({ tone: "bad", kind: "stalled", text: [h("strong", {}, "Reconciling stalled: "), `${status.stalled.reason}: ${status.stalled.message}`] });
  }
  if (status.lastPass && status.lastPass.error) {
    items.push({ tone: "bad", kind: "pass", text: [h("strong", {}, "Last pass failed: "), status.lastPass.error] });
  }
  for (const m of status.modules || []) {
    const r = m.rollout;
    if (r && r.phase === "WaitingApproval") {
      items.push({ tone: "warn", kind: "approval", text: [h("strong", {}, "Waits for approval: "), rolloutLink(r), ` ${m.module} ${r.fromVersion || "—"} → ${r.toVersion}. `, r.message || ""] });
    } else if (r && ACTIVE.has(r.phase) && (r.phase === "Paused" || r.held)) {
      items.push({ tone: "warn", kind: "paused", text: [h("strong", {}, r.held ? "Held by an operator: " : "Paused: "), rolloutLink(r), ` ${m.module} → ${r.toVersion}. `, `${r.reason}: ${r.message}`] });
    }
    const stalled = condition(m.conditions, "Stalled");
    if (stalled && stalled.status === "True") {
      items.push({ tone: "bad", kind: "stalled-module", text: [h("strong", {}, `${m.module} stalled: `), r ? [rolloutLink(r), " "] : null, `${stalled.reason}: ${stalled.message}`] });
    }
    const waitingPin = condition(m.conditions, "Paused");
    if (waitingPin && waitingPin.status === "True" && waitingPin.reason === "AwaitingApproval" && !(r && r.phase === "WaitingApproval")) {
      items.push({ tone: "warn", kind: "approval", text: [h("strong", {}, `${m.module} waits for approval: `), h("a", { href: `#/modules/${enc(m.module)}` }, m.module), ` ${waitingPin.message}`] });
    }
  }
  for (const n of status.nodes || []) {
    if (n.status === "Unhealthy") {
      items.push({ tone: "bad", kind: "node", text: [h("strong", {}, "Node unhealthy: "), h("a", { href: `#/nodes/${enc(n.id)}` }, n.id), ` in ${n.region}, last heartbeat ${fmt.ago(n.lastHeartbeat)}.`] });
    }
    const failed = Object.entries(n.failed || {});
    if (failed.length) {
      items.push({
        tone: "bad",
        kind: "node-failed",
        text: [h("strong", {}, "Could not load on "), h("a", { href: `#/nodes/${enc(n.id)}` }, n.id), ": ", failed.map(([what, why]) => `${what}: ${why}`).join("; ")],
      });
    }
  }
  return items;
}

function card(label, value, testid, extra) {
  return h("div", { class: "card", "data-testid": testid }, h("div", { class: "value" }, String(value)), h("div", { class: "label" }, label), extra || null);
}

export async function render(ctx) {
  ctx.title("Fleet");
  const parts = { revision: h("div"), attention: h("div"), counts: h("div"), source: h("div"), warnings: h("div"), events: h("div") };
  fill(
    ctx.root,
    heading("Fleet"),
    h("section", { "aria-labelledby": "fleet-attention" }, h("h2", { id: "fleet-attention" }, "Needs attention"), parts.attention),
    h("section", { "aria-labelledby": "fleet-revision" }, h("h2", { id: "fleet-revision" }, "Followed revision"), parts.revision),
    parts.counts,
    h("section", { "aria-labelledby": "fleet-source" }, h("h2", { id: "fleet-source" }, "Source conditions"), parts.source),
    parts.warnings,
    h("section", { "aria-labelledby": "fleet-events" }, h("h2", { id: "fleet-events" }, "Recent events"), parts.events),
  );
  let commit = null; // {sha, author, message, verified, reason, signer} of the followed head
  let commitOf = null;

  async function loadCommit(source, status) {
    const sha = source.lastAppliedRevision || status.revision;
    if (!sha || sha === commitOf) return;
    commitOf = sha;
    const given = source.commit || status.commit;
    if (given) {
      commit = given;
      return;
    }
    try {
      const diff = await api("/api/v1/wasm/diff", { query: { ref: sha } });
      commit = { sha: diff.sha, author: diff.author, message: diff.message, verified: diff.verified, reason: diff.reason, signer: diff.signer };
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      commit = null;
      commitOf = null; // ask again on the next refresh
    }
  }

  function drawRevision(status) {
    const source = status.source || {};
    const sha = source.lastAppliedRevision || status.revision;
    const mine = commit && sha && commit.sha && sha.startsWith(commit.sha.slice(0, 7)) ? commit : null;
    const verified = mine && typeof mine.verified === "boolean" ? mine.verified : source.verified;
    const why = (mine && mine.reason) || source.verifiedReason || source.reason || null;
    const signer = (mine && mine.signer) || source.signer || null;
    fill(
      parts.revision,
      facts([
        ["Commit", sha ? h("span", { class: "mono", title: sha, "data-testid": "revision" }, fmt.sha(sha)) : "none yet"],
        mine && mine.message ? ["Message", mine.message.split("\n")[0]] : null,
        ["Author", (mine && mine.author) || source.author || h("span", { class: "muted" }, "not given")],
        ["Signer", signer || h("span", { class: "muted" }, verified ? "not given" : "none")],
        [
          "Verified",
          h(
            "span",
            { "data-testid": "verified" },
            verified ? badge("verified", "verified") : badge("Unknown", "not verified"),
            " ",
            verified ? "" : why || (source.verified === false ? "no signature was checked (the fleet does not require signed commits, or the commit is unsigned)" : ""),
          ),
        ],
        ["Branch", `${source.branch || "—"}${source.path ? ` (${source.path})` : ""} of ${source.url || "—"}`],
        source.observedRevision && source.observedRevision !== sha ? ["Head seen", h("span", { class: "mono", title: source.observedRevision }, `${fmt.sha(source.observedRevision)} (not applied)`)] : null,
        ["Applied by the last pass", status.appliedRevision ? h("span", { class: "mono", title: status.appliedRevision }, fmt.sha(status.appliedRevision)) : "—"],
        ["Last pass", status.lastPass ? [h("time", { datetime: status.lastPass.at, title: fmt.time(status.lastPass.at) }, fmt.ago(status.lastPass.at)), ` · ${status.lastPass.durationMs} ms · ${status.lastPass.passes} passes`] : "—"],
      ]),
    );
  }

  function drawCounts(status) {
    const modules = status.modules || [];
    const rollouts = modules.map((m) => m.rollout).filter((r) => r && ACTIVE.has(r.phase));
    const nodes = status.nodes || [];
    const by = {};
    for (const n of nodes) by[n.status] = (by[n.status] || 0) + 1;
    const health = ["Healthy", "Unhealthy", "Draining"].concat(Object.keys(by).filter((s) => !["Healthy", "Unhealthy", "Draining"].includes(s)));
    fill(
      parts.counts,
      h(
        "div",
        { class: "cards", "data-testid": "fleet-counts" },
        card("modules", modules.length, "count-modules", h("a", { href: "#/modules" }, "Modules")),
        card("rollouts in progress", rollouts.length, "count-rollouts", h("a", { href: "#/rollouts?active=1" }, "Rollouts")),
        card("nodes", nodes.length, "count-nodes", h("a", { href: "#/nodes" }, "Nodes")),
        health.map((s) => card(`nodes ${s.toLowerCase()}`, by[s] || 0, `nodes-${s.toLowerCase()}`, badge(s))),
      ),
      rollouts.length
        ? h(
            "ul",
            { class: "timeline", "data-testid": "rollouts-in-progress" },
            rollouts.map((r) => h("li", {}, rolloutLink(r), " ", badge(r.held ? "Paused" : r.phase, r.held ? `${r.phase} (held)` : r.phase), ` ${r.module} ${r.fromVersion || "—"} → ${r.toVersion}: ${r.message || ""}`)),
          )
        : null,
    );
  }

  function drawSource(status) {
    const conditions = (status.source && status.source.conditions) || [];
    fill(
      parts.source,
      conditions.length
        ? h(
            "table",
            { "data-testid": "source-conditions" },
            h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Message"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              conditions.map((c) => {
                const good = c.type === "Stalled" ? c.status !== "True" : c.status === "True";
                return h("tr", {}, h("td", {}, c.type), h("td", {}, badge(good ? "ok" : "failed", c.status)), h("td", {}, c.reason), h("td", {}, c.message));
              }),
            ),
          )
        : h("p", { class: "muted" }, "No condition reported yet."),
      (status.source && status.source.events && status.source.events.length) ? h("ul", {}, status.source.events.slice(-5).map((e) => h("li", {}, e))) : null,
    );
    const warnings = status.warnings || [];
    fill(parts.warnings, warnings.length ? [h("h2", {}, "Warnings of the revision"), h("ul", { "data-testid": "warnings" }, warnings.map((w) => h("li", { class: "mono" }, w)))] : null);
  }

  function drawEvents(status) {
    const events = [...(status.events || [])].reverse().slice(0, 15);
    fill(
      parts.events,
      events.length
        ? h(
            "ol",
            { class: "timeline", "data-testid": "fleet-events" },
            events.map((e) =>
              h(
                "li",
                {},
                h("time", { datetime: new Date(e.at * 1000).toISOString() }, fmt.time(e.at)),
                e.type === "Warning" ? badge("Error", e.reason) : h("strong", {}, e.reason),
                " ",
                e.rollout ? [h("a", { href: `#/rollouts/${enc(e.rollout)}` }, e.rollout), " "] : null,
                e.message,
              ),
            ),
          )
        : h("p", { class: "muted" }, "No events yet."),
    );
  }

  function drawAttention(status) {
    const items = needsAttention(status);
    fill(
      parts.attention,
      items.length
        ? h("ul", { class: "attention", "data-testid": "needs-attention" }, items.map((i) => h("li", { class: i.tone, "data-kind": i.kind }, h("span", { "aria-hidden": "true" }, i.tone === "bad" ? "✕ " : "◐ "), i.text)))
        : h("p", { "data-testid": "needs-attention", "data-empty": "true" }, badge("ok", "All clear"), " Nothing needs a person now."),
    );
  }

  async function load() {
    let status;
    try {
      status = await api("/api/v1/wasm/status");
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      if (ctx.current()) fill(parts.attention, problem(error));
      return;
    }
    if (!ctx.current()) return;
    drawAttention(status);
    drawRevision(status);
    drawCounts(status);
    drawSource(status);
    drawEvents(status);
    const before = commitOf;
    await loadCommit(status.source || {}, status);
    if (commitOf !== before && ctx.current()) drawRevision(status);
  }

  await load();
  const again = throttle(load, 400);
  ctx.on(["pass", "event"], again);
  const nodesAgain = throttle(load, 1500); // node heartbeats come often; health changes are rarer
  ctx.on("nodes", nodesAgain);
}
