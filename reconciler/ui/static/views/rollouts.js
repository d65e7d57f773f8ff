// Rollouts: the list (#/rollouts) and one rollout (#/rollouts/<id>): its steps as a progress line,
// traffic per version over time, the analysis against its thresholds, smoke and health per node,
// the event timeline, approvals, and the operator's buttons. Live: refreshed on `event` and `pass`.
//
// Reads GET /api/v1/wasm/deployments[/<id>], GET /api/v1/wasm/snapshot (nodes' smoke results and
// the current window's metrics per version, approvals) and GET /api/v1/wasm/status (recent events).

import { lineChart } from "../chart.js";
import { ApiError, actionButton, api, badge, can, facts, fill, fmt, h, heading, pager, problem, searchBox, throttle } from "../lib.js";

// Roles the routes require (reconciler/api/deployments.py): pause, resume and rollback take
// ROLLBACKERS; execute (approve) takes REQUESTERS, or admin alone when the Fleet's environment is
// production.
const ROLLBACKERS = ["operator", "admin"];
const REQUESTERS = ["developer", "admin"];
const ACTIVE = new Set(["Pending", "WaitingApproval", "Progressing", "Paused"]);
const PAGE = 50;

const enc = encodeURIComponent;

export async function render(ctx) {
  if (ctx.params.length) return renderOne(ctx, ctx.params[0]);
  return renderList(ctx);
}

// -- helpers ---------------------------------------------------------------------------------

function epoch(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value < 1e12 ? value : value / 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t / 1000;
}

function when(value) {
  const t = epoch(value);
  if (t === null) return "—";
  return h("time", { datetime: new Date(t * 1000).toISOString(), title: fmt.time(t) }, fmt.ago(t));
}

function clock(x) {
  return new Date(x * 1000).toISOString().slice(11, 19);
}

export function stepLabel(d) {
  if (d.stepKind === "Promote") return "Promote (100%)";
  if (d.step === null || d.step === undefined || d.step < 0) {
    return d.phase === "WaitingApproval" ? "before the first step (approval)" : "—";
  }
  const where = d.region !== null && d.region !== undefined && d.strategyType === "Regional" ? ` region ${d.region}` : "";
  return `step ${d.step}${where} (${d.stepKind || "?"}, ${d.percent}%)`;
}

function versions(d) {
  return d.fromVersion ? `${d.fromVersion} → ${d.toVersion}` : `— → ${d.toVersion}`;
}

function phaseBadge(d, testid) {
  const el = badge(d.held && ACTIVE.has(d.phase) ? "Paused" : d.phase, d.held && d.phase !== "Paused" ? `${d.phase} (held)` : d.phase);
  el.dataset.testid = testid;
  return el;
}

// -- the list --------------------------------------------------------------------------------

async function renderList(ctx) {
  ctx.title("Rollouts");
  let module = ctx.query.get("module") || "";
  let activeOnly = ctx.query.get("active") === "1";
  let offset = 0;
  const body = h("div", { "data-testid": "rollouts-list" });
  const active = h("input", { type: "checkbox", id: "rollouts-active", checked: activeOnly });
  active.addEventListener("change", () => {
    activeOnly = active.checked;
    offset = 0;
    load();
  });
  fill(
    ctx.root,
    heading("Rollouts"),
    h(
      "div",
      { class: "toolbar" },
      searchBox("Module name", module, (text) => {
        module = text;
        offset = 0;
        load();
      }),
      h("label", { for: "rollouts-active" }, active, " In progress only"),
    ),
    body,
  );

  async function load() {
    let data;
    try {
      data = await api("/api/v1/wasm/deployments", { query: { module, limit: PAGE, offset, order: "desc", active: activeOnly ? 1 : undefined } });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      fill(body, problem(error));
      return;
    }
    if (!ctx.current()) return;
    let rows = data.deployments || [];
    let total = data.total;
    if (total === undefined) {
      if (activeOnly) rows = rows.filter((d) => ACTIVE.has(d.phase));
      // no server-side paging: newest first, paged here
      rows = [...rows].sort((a, b) => (epoch(b.createdAt) || 0) - (epoch(a.createdAt) || 0));
      total = rows.length;
      rows = rows.slice(offset, offset + PAGE);
    }
    fill(
      body,
      rows.length
        ? h(
            "table",
            {},
            h(
              "thead",
              {},
              h("tr", {}, ["Rollout", "Module", "From → to", "Strategy", "Phase", "Current step", "Started"].map((t) => h("th", { scope: "col" }, t))),
            ),
            h(
              "tbody",
              {},
              rows.map((d) =>
                h(
                  "tr",
                  { "data-rollout": d.id },
                  h("td", {}, h("a", { href: `#/rollouts/${enc(d.id)}` }, d.id)),
                  h("td", {}, d.module),
                  h("td", { class: "mono" }, versions(d)),
                  h("td", {}, d.strategy ? `${d.strategy} (${d.strategyType})` : "at once"),
                  h("td", {}, phaseBadge(d, "row-phase")),
                  h("td", { "data-testid": "row-step" }, stepLabel(d)),
                  h("td", {}, when(d.createdAt)),
                ),
              ),
            ),
          )
        : h("p", { class: "muted empty" }, module ? `No rollout of “${module}”.` : "No rollouts yet."),
      total > PAGE
        ? pager({
            total,
            offset,
            limit: PAGE,
            onPage: (next) => {
              offset = next;
              load();
            },
          })
        : null,
    );
  }

  await load();
  const again = throttle(load, 500);
  ctx.on(["pass", "event"], again);
}

// -- one rollout -----------------------------------------------------------------------------

// The strategy's own steps when the record carries the strategy's spec (`strategySpec`), else null.
function plannedSteps(d) {
  const spec = d.strategySpec || d.strategyConfig;
  if (!spec) return null;
  if (d.strategyType === "Canary" && spec.canary) return (spec.canary.steps || []).map((p, i) => ({ step: i, kind: "Weight", percent: p }));
  if (d.strategyType === "BlueGreen") return [{ step: 0, kind: "Preview", percent: 0 }, { step: 1, kind: "Switch", percent: 100 }];
  if (d.strategyType === "ABTest" && spec.abTest) return [{ step: 0, kind: "Split", percent: spec.abTest.split }];
  return null;
}

// Steps seen: from StepStarted events ("greeter: step 1 (Weight, 25%)"), the history, the record.
function seenSteps(d, events) {
  const seen = new Map();
  const put = (step, kind, percent, region) => {
    const key = `${region ?? ""}/${step}`;
    const old = seen.get(key) || {};
    seen.set(key, { step, kind: kind ?? old.kind, percent: percent ?? old.percent, region: region ?? old.region });
  };
  for (const e of events) {
    if (e.reason !== "StepStarted") continue;
    const m = /step (\d+)(?: in ([\w-]+))? \((\w+), (\d+)%\)/.exec(e.message || "");
    if (m) put(Number(m[1]), m[3], Number(m[4]), m[2] || null);
  }
  for (const r of d.history || []) if (r.step >= 0 && r.kind !== "Promote") put(r.step, r.kind, undefined, r.region);
  if (d.step >= 0 && d.stepKind && d.stepKind !== "Promote") put(d.step, d.stepKind, d.percent, null);
  return [...seen.values()];
}

function progressLine(d, events) {
  const planned = plannedSteps(d);
  let steps = planned || seenSteps(d, events);
  if (!planned) {
    // one entry per (region, step), in order; a record's own region has no name, keep the named one
    const byKey = new Map();
    for (const s of steps) {
      const key = d.strategyType === "Regional" ? `${s.region ?? "?"}/${s.step}` : `${s.step}`;
      byKey.set(key, { ...byKey.get(key), ...Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined && v !== null)) });
    }
    steps = [...byKey.values()];
  }
  const history = d.history || [];
  const failedAt = [...history].reverse().find((r) => r.outcome === "Failed");
  const finished = !ACTIVE.has(d.phase);
  const promoting = d.stepKind === "Promote";
  const items = steps.map((s) => {
    let state = "";
    if (d.phase === "Promoted" || promoting) state = "done";
    else if (failedAt && failedAt.step === s.step && (!failedAt.region || !s.region || failedAt.region === s.region) && finished) state = "failed";
    else if (s.step < d.step) state = "done";
    else if (s.step === d.step && !finished) state = d.phase === "WaitingApproval" ? "done" : "current";
    else if (s.step === d.step && finished && d.phase !== "Promoted") state = failedAt ? "failed" : "";
    const what = s.kind === "Weight" || s.kind === "Split" || s.kind === "Batch" ? `${s.percent ?? "?"}%` : s.kind;
    const label = `${s.region ? `${s.region} · ` : ""}step ${s.step}: ${what}`;
    return { state, label, key: `s${s.step}` };
  });
  if (!planned && ACTIVE.has(d.phase) && !promoting) items.push({ state: "", label: "later steps", key: "more" });
  if (d.phase === "WaitingApproval") {
    const at = items.findIndex((i) => i.state === "" || i.key === "more");
    const gate = { state: "current", label: `approval (${d.reason || "AwaitingApproval"})`, key: "approval" };
    if (at < 0) items.push(gate);
    else items.splice(at, 0, gate);
  }
  items.push({
    state: d.phase === "Promoted" ? "done" : promoting ? "current" : "",
    label: d.phase === "RolledBack" ? "Promote (not reached: rolled back)" : "Promote: new version alone",
    key: "promote",
  });
  const WORD = { done: "✓ done", current: "◐ now", failed: "✕ failed", "": "○ to come" };
  return h(
    "ol",
    { class: "steps", "data-testid": "steps", "aria-label": "Steps of the strategy" },
    items.map((i) =>
      h(
        "li",
        { class: i.state || null, "aria-current": i.state === "current" ? "step" : null, "data-state": i.state || "todo", "data-step": i.key },
        h("div", {}, i.label),
        h("div", { class: "muted" }, WORD[i.state]),
      ),
    ),
  );
}

// The rollout's share of requests per version: the step's percent at each step's start.
function trafficPoints(d, events, samples) {
  const created = epoch(d.createdAt);
  const points = new Map(); // t -> new version's percent
  if (created !== null) points.set(created, d.fromVersion ? 0 : 100);
  for (const e of events) {
    if (e.reason !== "StepStarted") continue;
    const m = /\((\w+), (\d+)%\)/.exec(e.message || "");
    if (m) points.set(e.at, Number(m[2]));
  }
  for (const [t, p] of samples) points.set(t, p);
  const finished = epoch(d.finishedAt);
  if (finished !== null) {
    if (d.phase === "Promoted") points.set(finished, 100);
    else if (d.phase === "RolledBack" || d.phase === "Aborted") points.set(finished, 0);
  }
  const sorted = [...points.entries()].sort((a, b) => a[0] - b[0]);
  const series = [{ name: `${d.toVersion} (new)`, points: sorted.map(([t, p]) => [t, p]) }];
  if (d.fromVersion) series.push({ name: `${d.fromVersion} (stable)`, points: sorted.map(([t, p]) => [t, 100 - p]) });
  return series;
}

// Error rate and p99 of a version over the current step's window, summed over regions.
function windowMetrics(snapshot, module, version) {
  if (!snapshot || !version) return null;
  let requests = 0;
  let errors = 0;
  let p99 = null;
  let lastError = null;
  for (const m of snapshot.metrics || []) {
    if (m.module !== module || m.version !== version) continue;
    requests += m.requests || 0;
    errors += m.errors || 0;
    if (m.p99_ms !== null && m.p99_ms !== undefined) p99 = Math.max(p99 ?? 0, m.p99_ms);
    if (m.last_error) lastError = m.last_error;
  }
  return { requests, errorRate: requests ? errors / requests : null, p99, lastError };
}

function thresholdsOf(d) {
  const spec = d.strategySpec || d.strategyConfig;
  const analysis = d.analysis || (spec && spec.analysis) || null;
  return analysis;
}

function lastError(d, snapshot) {
  const failed = [...(d.history || [])].reverse().find((r) => r.outcome === "Failed");
  const metrics = windowMetrics(snapshot, d.module, d.toVersion);
  const bad = ["RolledBack", "Aborted"].includes(d.phase) || (d.phase === "Paused" && failed);
  if (failed) return `${failed.reason}: ${failed.message}`;
  if (bad && d.message) return `${d.reason}: ${d.message}`;
  if (metrics && metrics.lastError) return metrics.lastError;
  return null;
}

function nodesTable(d, snapshot) {
  if (!snapshot) return h("p", { class: "muted" }, "Loading nodes…");
  const rows = (snapshot.nodes || []).filter(
    (n) => (n.running || []).some((r) => r.module === d.module) || (n.assigned || []).some((a) => a.module === d.module) || (n.smoke || []).some((s) => s.module === d.module),
  );
  if (!rows.length) return h("p", { class: "muted empty" }, `No node runs ${d.module}.`);
  return h(
    "table",
    { "data-testid": "rollout-nodes" },
    h("caption", {}, `Nodes running ${d.module}`),
    h("thead", {}, h("tr", {}, ["Node", "Region", "Health", "Runs (weight)", `Smoke check of ${d.toVersion}`].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rows.map((n) => {
        const smoke = (n.smoke || []).find((s) => s.module === d.module && s.version === d.toVersion);
        const runs = (n.running || []).filter((r) => r.module === d.module);
        return h(
          "tr",
          { "data-node": n.id },
          h("td", {}, h("a", { href: `#/nodes/${enc(n.id)}` }, n.id)),
          h("td", {}, n.region),
          h("td", {}, badge(n.status)),
          h("td", { class: "mono" }, runs.length ? runs.map((r) => `${r.version} (${r.weight})`).join(", ") : "—"),
          h(
            "td",
            { "data-testid": "smoke" },
            smoke ? [badge(smoke.passed ? "ok" : "failed", smoke.passed ? "passed" : "failed"), smoke.error ? h("div", { class: "mono" }, smoke.error) : null] : h("span", { class: "muted" }, (d.module && runs.some((r) => r.version === d.toVersion)) ? "no smoke calls" : "not loaded"),
          ),
        );
      }),
    ),
  );
}

function approvalsSection(d, snapshot) {
  const given = ((snapshot && snapshot.approvals) || []).filter((a) => a.module === d.module && a.version === d.toVersion);
  const used = new Set(((snapshot && snapshot.records) || []).find((r) => r.id === d.id)?.approvals_used || []);
  const results = (d.history || []).filter((r) => r.outcome === "Approved");
  if (!given.length && !results.length) return h("p", { class: "muted", "data-testid": "approvals" }, "No approvals for this version.");
  return h(
    "div",
    { "data-testid": "approvals" },
    given.length
      ? h(
          "table",
          {},
          h("caption", {}, `Approvals of ${d.module}@${d.toVersion}`),
          h("thead", {}, h("tr", {}, ["Who", "Roles", "Commit", "How", "Spent on a gate"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            given.map((a) =>
              h(
                "tr",
                { "data-approval": a.commit },
                h("td", {}, a.principal),
                h("td", {}, (a.roles || []).join(", ") || "—"),
                h("td", { class: "mono", title: a.commit }, fmt.sha(a.commit)),
                h("td", {}, a.via === "api" ? "through the console/API" : "signed commit"),
                h("td", {}, used.has(a.commit) ? "yes" : "no"),
              ),
            ),
          ),
        )
      : null,
    results.length
      ? h(
          "ul",
          { class: "timeline" },
          results.map((r) => h("li", {}, h("time", { datetime: new Date(r.at * 1000).toISOString() }, fmt.time(r.at)), `step ${r.step} approved: ${r.message}`)),
        )
      : null,
  );
}

function timeline(d, events) {
  const items = [];
  const seen = new Set();
  for (const e of events) {
    const key = `${e.at}|${e.reason}|${e.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    items.push({ at: e.at, reason: e.reason, message: e.message, warning: e.type === "Warning" });
  }
  for (const s of d.steps || []) {
    const at = epoch(s.at);
    items.push({ at, reason: `Step ${s.step} ${s.event}`, message: s.message, warning: s.event === "Failed" });
  }
  if (!(d.steps || []).length) {
    for (const r of d.history || []) items.push({ at: r.at, reason: `Step ${r.step} ${r.outcome}`, message: `${r.reason}: ${r.message}`, warning: r.outcome === "Failed" });
  }
  items.sort((a, b) => (b.at || 0) - (a.at || 0));
  if (!items.length) return h("p", { class: "muted", "data-testid": "timeline" }, "No events yet.");
  return h(
    "ol",
    { class: "timeline", "data-testid": "timeline" },
    items.slice(0, 200).map((i) =>
      h(
        "li",
        { "data-reason": i.reason },
        h("time", { datetime: i.at ? new Date(i.at * 1000).toISOString() : null }, i.at ? fmt.time(i.at) : "—"),
        i.warning ? badge("Error", i.reason) : h("strong", {}, i.reason),
        " ",
        i.message,
      ),
    ),
  );
}

async function renderOne(ctx, id) {
  ctx.title(`Rollout ${id}`);
  const path = `/api/v1/wasm/deployments/${enc(id)}`;
  let d;
  try {
    d = await api(path);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    fill(ctx.root, h("p", {}, h("a", { href: "#/rollouts" }, "‹ All rollouts")), h("h1", {}, `Rollout ${id}`), h("div", { "data-testid": "rollout-missing" }, problem(error)));
    return;
  }
  let snapshot = null;
  let environment = null;
  let events = [];
  const samples = new Map(); // t -> the new version's percent, seen while the page is open
  const analysis = { newErr: new Map(), stableErr: new Map(), newP99: new Map(), stableP99: new Map() };

  const parts = {
    head: h("div"),
    error: h("div", { "data-testid": "last-error-area" }),
    actions: h("div"),
    facts: h("div"),
    steps: h("div"),
    traffic: h("div", { "data-testid": "traffic" }),
    analysis: h("div", { "data-testid": "analysis" }),
    nodes: h("div"),
    approvals: h("div"),
    timeline: h("div"),
  };
  fill(
    ctx.root,
    h("p", {}, h("a", { href: "#/rollouts" }, "‹ All rollouts")),
    parts.head,
    parts.error,
    parts.actions,
    parts.facts,
    h("h2", { id: "ro-steps" }, "Steps"),
    parts.steps,
    h("h2", {}, "Traffic per version"),
    parts.traffic,
    h("h2", {}, "Analysis"),
    parts.analysis,
    h("h2", {}, "Smoke and health per node"),
    parts.nodes,
    h("h2", {}, "Approvals"),
    parts.approvals,
    h("h2", {}, "Events"),
    parts.timeline,
  );

  const out = h("div", { class: "out", "aria-live": "polite" });
  let actionsKey = null;

  function drawActions() {
    const active = ACTIVE.has(d.phase);
    const approverRoles = environment === "production" ? ["admin"] : REQUESTERS;
    const show = {
      pause: active && !d.held && can(...ROLLBACKERS),
      resume: active && d.held && can(...ROLLBACKERS),
      rollback: active && can(...ROLLBACKERS),
      approve: d.phase === "WaitingApproval" && can(...approverRoles),
      waiting: d.phase === "WaitingApproval",
    };
    const key = JSON.stringify(show);
    if (key === actionsKey) return; // keep the buttons (and keyboard focus) while nothing changed
    actionsKey = key;
    const post = (action, done) => async () => {
      const answer = await api(`${path}/${action}`, { method: "POST" });
      refresh();
      return done(answer);
    };
    const target = `${d.module}@${d.toVersion}`;
    const buttons = [
      show.pause ? withId(actionButton("Pause", post("pause", () => `Paused ${d.id}: it holds at its step.`), { out }), "pause") : null,
      show.resume ? withId(actionButton("Resume", post("resume", () => `Resumed ${d.id}.`), { out, kind: "primary" }), "resume") : null,
      show.rollback
        ? withId(actionButton("Roll back", post("rollback", () => `Rollback of ${d.id} requested: the next pass returns to ${d.fromVersion || "the stable version"}.`), { out, kind: "danger", confirm: `Roll ${d.module} back to ${d.fromVersion || "its stable version"} now?` }), "rollback")
        : null,
    ];
    const approveArea = show.waiting
      ? h(
          "div",
          { class: "notice", "data-testid": "approve-area" },
          h("p", {}, h("strong", {}, `${target} waits for approval. `), d.message || ""),
          show.approve
            ? withId(actionButton("Approve", post("execute", (a) => `Approved ${a.approves || target} as ${a.approvedBy || "you"} in commit ${fmt.sha(a.sha || a.commit)}.`), { out, kind: "primary" }), "approve")
            : h("p", { class: "muted" }, "Your role cannot approve here (", environment === "production" ? "admin" : "developer or admin", " can)."),
          h("p", {}, "Or approve with a signed commit in a checkout of the fleet repository:"),
          h("pre", {}, h("code", { "data-testid": "approve-command" }, `hotswap approve ${target} --push`)),
        )
      : null;
    const any = buttons.some(Boolean);
    fill(
      parts.actions,
      any || approveArea ? h("h2", { id: "ro-actions" }, "Actions") : null,
      any ? h("div", { class: "toolbar", "data-testid": "rollout-actions" }, buttons) : null,
      approveArea,
      out,
    );
  }

  function drawHead() {
    fill(
      parts.head,
      heading(`Rollout ${d.id}`, phaseBadge(d, "rollout-phase")),
      h(
        "p",
        { class: "lead" },
        h("a", { href: `#/modules/${enc(d.module)}` }, d.module),
        " ",
        h("span", { class: "mono", "data-testid": "rollout-versions" }, versions(d)),
        d.strategy ? ` by ${d.strategy} (${d.strategyType})` : " at once (no strategy)",
        " · ",
        h("span", { "data-testid": "current-step" }, stepLabel(d)),
      ),
    );
    const error = lastError(d, snapshot);
    const said = `${d.reason}: ${d.message}`;
    parts.head.append(
      h("p", { "data-testid": "rollout-message", hidden: error === said }, h("strong", {}, d.reason || d.phase), d.message ? `: ${d.message}` : "", d.held ? " · held by an operator" : ""),
    );
    fill(parts.error, error ? h("p", { class: "problem last-error", role: "alert", "data-testid": "last-error" }, h("strong", {}, "last error: "), error) : null);
  }

  function drawFacts() {
    const weights = d.weightsOnNodes || {};
    const total = Object.values(weights).reduce((a, b) => a + b, 0);
    fill(
      parts.facts,
      facts([
        ["Started", when(d.createdAt)],
        ["Step started", when(d.stepStartedAt)],
        d.finishedAt ? ["Finished", when(d.finishedAt)] : null,
        ["Revision", d.revision ? h("span", { class: "mono", title: d.revision }, fmt.sha(d.revision)) : "—"],
        [
          "Weights on nodes now",
          total
            ? h("span", { "data-testid": "weights-now" }, Object.entries(weights).map(([v, w]) => `${v}: ${Math.round((100 * w) / total)}%`).join(" · "))
            : "—",
        ],
        d.abResult ? ["A/B result", `${d.abResult.winner} won on ${d.abResult.metric} (A ${d.abResult.a_value ?? d.abResult.aValue}, B ${d.abResult.b_value ?? d.abResult.bValue})`] : null,
      ]),
    );
  }

  function drawCharts() {
    fill(parts.traffic, lineChart({ title: "Share of requests per version (%)", series: trafficPoints(d, events, samples), step: true, yMax: 100, yFormat: (y) => `${Math.round(y)}%`, xFormat: clock }));
    const limits = thresholdsOf(d);
    const history = (d.history || []).filter((r) => r.outcome !== "Approved" && r.requests > 0);
    const newErr = new Map(history.map((r) => [r.at, r.error_rate ?? r.errorRate ?? 0]));
    for (const [t, v] of analysis.newErr) newErr.set(t, v);
    const newP99 = new Map(history.filter((r) => (r.p99_ms ?? r.p99Ms) !== null && (r.p99_ms ?? r.p99Ms) !== undefined).map((r) => [r.at, r.p99_ms ?? r.p99Ms]));
    for (const [t, v] of analysis.newP99) newP99.set(t, v);
    const sorted = (m) => [...m.entries()].sort((a, b) => a[0] - b[0]);
    const errThresholds = limits && limits.maxErrorRate !== undefined && limits.maxErrorRate !== null ? [{ y: limits.maxErrorRate, label: `max error rate ${fmt.pct(limits.maxErrorRate)}` }] : [];
    const p99Thresholds = limits && limits.maxLatencyP99Ms ? [{ y: limits.maxLatencyP99Ms, label: `max p99 ${fmt.ms(limits.maxLatencyP99Ms)}` }] : [];
    const errSeries = [{ name: `${d.toVersion} (new)`, points: sorted(newErr) }];
    const p99Series = [{ name: `${d.toVersion} (new)`, points: sorted(newP99) }];
    if (d.fromVersion) {
      errSeries.push({ name: `${d.fromVersion} (stable)`, points: sorted(analysis.stableErr) });
      p99Series.push({ name: `${d.fromVersion} (stable)`, points: sorted(analysis.stableP99) });
    }
    fill(
      parts.analysis,
      limits
        ? h("p", { class: "muted" }, `Thresholds from the strategy: error rate at most ${fmt.pct(limits.maxErrorRate)}`, limits.maxLatencyP99Ms ? `, p99 at most ${fmt.ms(limits.maxLatencyP99Ms)}` : ", p99 not judged", limits.minRequests !== undefined ? `, at least ${limits.minRequests} requests per step` : "", ".")
        : h("p", { class: "muted", "data-testid": "no-thresholds" }, "The control plane does not say this rollout's analysis thresholds; each step's verdict is in the table below."),
      h("div", { class: "chart-pair" }, lineChart({ title: "Error rate: new against stable", series: errSeries, thresholds: errThresholds, yFormat: (y) => fmt.pct(y, 2), xFormat: clock }), lineChart({ title: "p99 latency: new against stable", series: p99Series, thresholds: p99Thresholds, yFormat: (y) => fmt.ms(y), xFormat: clock })),
      history.length || (d.history || []).length
        ? h(
            "table",
            { "data-testid": "analysis-table" },
            h("caption", {}, "Each step's verdict"),
            h("thead", {}, h("tr", {}, ["Step", "Region", "Outcome", "Requests", "Error rate", "p99", "Why"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              (d.history || []).map((r) =>
                h(
                  "tr",
                  {},
                  h("td", {}, `${r.step} (${r.kind || "—"})`),
                  h("td", {}, r.region || "—"),
                  h("td", {}, badge(r.outcome === "Passed" ? "ok" : r.outcome === "Failed" ? "failed" : r.outcome === "Approved" ? "Approved" : "Pending", r.outcome)),
                  h("td", { class: "num" }, String(r.requests ?? 0)),
                  h("td", { class: "num" }, fmt.pct(r.error_rate ?? r.errorRate, 2)),
                  h("td", { class: "num" }, fmt.ms(r.p99_ms ?? r.p99Ms)),
                  h("td", {}, `${r.reason}: ${r.message}`),
                ),
              ),
            ),
          )
        : null,
    );
  }

  function sample() {
    const now = Date.now() / 1000;
    if (ACTIVE.has(d.phase)) {
      const t = epoch(d.stepStartedAt) ?? now;
      if (d.step >= 0 || d.stepKind === "Promote") samples.set(t, d.stepKind === "Promote" ? 100 : d.percent);
    }
    if (snapshot && ACTIVE.has(d.phase)) {
      const mine = windowMetrics(snapshot, d.module, d.toVersion);
      const stable = windowMetrics(snapshot, d.module, d.fromVersion);
      if (mine && mine.errorRate !== null) analysis.newErr.set(now, mine.errorRate);
      if (mine && mine.p99 !== null) analysis.newP99.set(now, mine.p99);
      if (stable && stable.errorRate !== null) analysis.stableErr.set(now, stable.errorRate);
      if (stable && stable.p99 !== null) analysis.stableP99.set(now, stable.p99);
      for (const m of Object.values(analysis)) while (m.size > 600) m.delete(m.keys().next().value);
    }
  }

  function draw() {
    sample();
    drawHead();
    drawActions();
    drawFacts();
    fill(parts.steps, progressLine(d, events));
    drawCharts();
    fill(parts.nodes, nodesTable(d, snapshot));
    fill(parts.approvals, approvalsSection(d, snapshot));
    fill(parts.timeline, timeline(d, events));
  }

  async function loadSnapshot() {
    try {
      snapshot = await api("/api/v1/wasm/snapshot");
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      snapshot = snapshot || { nodes: [], metrics: [], approvals: [], records: [] };
    }
  }

  async function loadEvents() {
    try {
      const status = await api("/api/v1/wasm/status");
      environment = status.environment || (status.fleet && status.fleet.environment) || null;
      const mine = (status.events || []).filter((e) => e.rollout === d.id);
      const have = new Set(events.map((e) => `${e.at}|${e.reason}`));
      for (const e of mine) if (!have.has(`${e.at}|${e.reason}`)) events.push(e);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
    }
  }

  async function refresh() {
    try {
      d = await api(path);
    } catch (error) {
      if (!ctx.current()) return;
      fill(parts.error, problem(error));
      return;
    }
    if (!ctx.current()) return;
    draw();
  }

  const refreshSoon = throttle(refresh, 250);
  // The snapshot (every node's table) is heavier: at most every 2 s, and only while it matters.
  const snapshotSoon = throttle(async () => {
    if (!ACTIVE.has(d.phase) && snapshot) return;
    await loadSnapshot();
    if (ctx.current()) draw();
  }, 2000);

  ctx.on("event", (message) => {
    const e = message.event || {};
    if (e.rollout === d.id) {
      events.push(e);
      if (ctx.current()) fill(parts.timeline, timeline(d, events));
    }
    if (e.rollout === d.id || e.module === d.module) refreshSoon();
  });
  ctx.on("pass", () => {
    if (ACTIVE.has(d.phase)) refreshSoon();
    snapshotSoon();
  });

  draw();
  await Promise.all([loadSnapshot(), loadEvents()]);
  if (ctx.current()) draw();
}

function withId(button, testid) {
  button.dataset.testid = testid;
  return button;
}
