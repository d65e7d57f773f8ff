// Nodes: the edge nodes by region and health (GET /api/v1/wasm/nodes with q, status, region, limit
// and offset, filtered and paged on the server when it answers with "total"), and one node: its
// facts, health, what it runs with which weight, what failed to load, and Drain / Undrain for the
// roles drain_node accepts (reconciler/api/control.py: admin, operator).

import { WRITERS, actionButton, api, badge, can, facts, fetchAll, fetchPage, fill, fmt, h, heading, labelled, liveRefresh, pageFooter, refill, rememberQuery, searchBox } from "../lib.js";

const LIMIT = 50;
const STATUSES = ["Healthy", "Unhealthy", "Draining"];
const PATH = "/api/v1/wasm/nodes";

function matches(node, { q, status, region }) {
  if (status && node.status !== status) return false;
  if (region && node.region !== region) return false;
  if (q) {
    const needle = q.toLowerCase();
    return [node.id, node.region, node.url].some((text) => String(text || "").toLowerCase().includes(needle));
  }
  return true;
}

// One page of the nodes the filters in `state` pick.
function nodePage(state) {
  const { q, status, region, offset } = state;
  return fetchPage(PATH, "nodes", { offset, limit: LIMIT, query: { q, status, region }, keep: (n) => matches(n, state) });
}

function statusBadge(status) {
  return h("span", { "data-testid": "node-status" }, badge(status));
}

function cpu(value) {
  return value === null || value === undefined ? "—" : `${Number(value).toFixed(1)}%`;
}

function memory(value) {
  return value === null || value === undefined ? "—" : `${Math.round(Number(value))} MB`;
}

function runningText(node) {
  const modules = node.modules || [];
  if (!modules.length) return h("span", { class: "muted" }, "nothing");
  const names = modules.map((m) => `${m.module}@${m.version}${m.weight === 100 ? "" : ` (${m.weight}%)`}`);
  const shown = names.slice(0, 4).join(", ");
  return h("span", { title: names.join(", ") }, `${modules.length}: `, h("span", { class: "mono" }, names.length > 4 ? `${shown}, …` : shown));
}

function heartbeatCell(value) {
  return value ? h("time", { datetime: value, title: fmt.time(value) }, fmt.ago(value)) : h("span", { class: "muted" }, "never");
}

// -- the list ---------------------------------------------------------------------------------

async function renderList(ctx) {
  const state = {
    q: ctx.query.get("q") || "",
    status: ctx.query.get("status") || "",
    region: ctx.query.get("region") || "",
    offset: Math.max(0, Number(ctx.query.get("offset")) || 0),
  };
  const summary = h("div", { "data-testid": "node-summary" }, h("p", { class: "muted" }, "Loading…"));
  const results = h("div", { "data-testid": "node-list" }, h("p", { class: "muted" }, "Loading…"));

  const search = searchBox("Search nodes by id, region or URL", state.q, (q) => setFilter({ q }), { "data-testid": "node-search", maxlength: "200" });
  const statusSelect = h(
    "select",
    { id: "node-status-filter", "data-testid": "node-filter-status" },
    h("option", { value: "" }, "any health"),
    STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, s)),
  );
  const regionSelect = h(
    "select",
    { id: "node-region-filter", "data-testid": "node-filter-region" },
    h("option", { value: "" }, "any region"),
    state.region ? h("option", { value: state.region, selected: true }, state.region) : null,
  );
  statusSelect.addEventListener("change", () => setFilter({ status: statusSelect.value }));
  regionSelect.addEventListener("change", () => setFilter({ region: regionSelect.value }));

  function setFilter(change) {
    Object.assign(state, change, { offset: 0 });
    statusSelect.value = state.status;
    regionSelect.value = state.region;
    refresh();
  }

  fill(
    ctx.root,
    heading("Nodes"),
    h("h2", { id: "by-region" }, "By region and health"),
    summary,
    h("h2", { id: "node-list-title" }, "Nodes"),
    h(
      "div",
      { class: "toolbar", role: "search", "aria-labelledby": "node-list-title" },
      search,
      labelled("Health", statusSelect),
      labelled("Region", regionSelect),
    ),
    results,
  );

  const columns = [
    { label: "Node", cell: (n) => h("a", { href: `#/nodes/${encodeURIComponent(n.id)}`, "data-focus": n.id }, n.id) },
    { label: "Region", cell: (n) => n.region },
    { label: "Health", cell: (n) => statusBadge(n.status) },
    { label: "CPU", class: "num", cell: (n) => cpu(n.cpuPercent) },
    { label: "Memory", class: "num", cell: (n) => memory(n.memoryMB) },
    { label: "Runs", cell: runningText },
    { label: "Last heartbeat", cell: (n) => heartbeatCell(n.lastHeartbeat) },
  ];

  const refresh = liveRefresh(ctx, results, { on: ["nodes", "pass"], every: 500 }, async (wanted) => {
    const page = await nodePage(state);
    if (!wanted()) return; // a later request (another page, a filter) wins
    state.offset = page.offset;
    rememberQuery("nodes", state);
    const filtered = state.q || state.status || state.region;
    const turn = (offset) => {
      state.offset = offset;
      refresh();
    };
    refill(
      results,
      page.items.length
        ? h(
            "table",
            { "data-testid": "node-table" },
            h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
            h(
              "tbody",
              {},
              page.items.map((n) =>
                h("tr", { "data-testid": "node-row", "data-node": n.id, "data-status": n.status }, columns.map((c) => h("td", { class: c.class }, c.cell(n)))),
              ),
            ),
          )
        : h("p", { class: "muted empty" }, filtered ? "No node matches these filters." : "No node has registered yet."),
      pageFooter(page, LIMIT, turn, `${page.total} node${page.total === 1 ? "" : "s"}${filtered ? " match" : ""}`),
    );
  });

  // Counts per region and health, from every node (slower refresh: it reads the whole list).
  liveRefresh(ctx, summary, { on: ["nodes", "pass"], every: 2000 }, async () => {
    const nodes = await fetchAll(PATH, "nodes");
    if (!ctx.current()) return;
    const regions = new Map();
    for (const n of nodes) {
      if (!regions.has(n.region)) regions.set(n.region, { total: 0 });
      const counts = regions.get(n.region);
      counts.total += 1;
      counts[n.status] = (counts[n.status] || 0) + 1;
    }
    const names = [...regions.keys()].sort();
    const keep = regionSelect.value;
    fill(regionSelect, h("option", { value: "" }, "any region"), [...new Set([...names, ...(keep ? [keep] : [])])].map((r) => h("option", { value: r, selected: r === keep }, r)));
    const others = [...new Set(nodes.map((n) => n.status))].filter((s) => !STATUSES.includes(s)).sort();
    const statuses = [...STATUSES, ...others];
    const pick = (region, status) => () => setFilter({ region, status });
    const count = (region, status, n) =>
      n
        ? h("button", { type: "button", class: "link-button", "data-focus": `${region}/${status}`, "aria-label": `${n} ${status || "nodes"} in ${region || "all regions"}: show them`, onclick: pick(region, status) }, status ? badge(status, `${n} ${status}`) : String(n))
        : h("span", { class: "muted" }, "0");
    refill(
      summary,
      nodes.length
        ? h(
            "table",
            { class: "summary" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Region"), h("th", { scope: "col", class: "num" }, "Nodes"), statuses.map((s) => h("th", { scope: "col" }, s)))),
            h(
              "tbody",
              {},
              names.map((r) =>
                h(
                  "tr",
                  { "data-testid": "region-row", "data-region": r },
                  h("th", { scope: "row" }, r),
                  h("td", { class: "num" }, count(r, "", regions.get(r).total)),
                  statuses.map((s) => h("td", {}, count(r, s, regions.get(r)[s] || 0))),
                ),
              ),
              h(
                "tr",
                { class: "total" },
                h("th", { scope: "row" }, "All regions"),
                h("td", { class: "num" }, count("", "", nodes.length)),
                statuses.map((s) => h("td", {}, count("", s, nodes.filter((n) => n.status === s).length))),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No node has registered yet: start one with hotswap edge, or hotswap up."),
    );
  });
}

// -- one node ---------------------------------------------------------------------------------

async function renderOne(ctx, id) {
  ctx.title(`Node ${id}`);
  const path = `${PATH}/${encodeURIComponent(id)}`;
  const out = h("div", { class: "out", "data-testid": "drain-result" });
  const actions = h("div", { class: "actions" });
  const body = h("div", { "data-testid": "node-detail" }, h("p", { class: "muted" }, "Loading…"));
  fill(
    ctx.root,
    h("p", {}, h("a", { href: "#/nodes" }, "← Nodes")),
    h("div", { class: "heading" }, h("h1", {}, `Node ${id}`), actions),
    out,
    body,
  );

  const writer = can(...WRITERS.node);
  let shownStatus = null;
  const showActions = (status) => {
    if (!writer || status === shownStatus) return;
    shownStatus = status;
    const draining = status === "Draining";
    const drain = actionButton(
      "Drain",
      async () => {
        const node = await api(`${path}/drain`, { method: "POST" });
        refresh();
        return `Draining ${id}: its modules are being placed on other nodes (status ${node.status}).`;
      },
      { out, kind: "danger" },
    );
    drain.setAttribute("data-testid", "drain");
    drain.setAttribute("aria-describedby", "drain-help");
    const undrain = actionButton(
      "Undrain",
      async () => {
        const node = await api(`${path}/drain`, { method: "DELETE" });
        refresh();
        return `${id} takes modules again (status ${node.status}).`;
      },
      { out },
    );
    undrain.setAttribute("data-testid", "undrain");
    const hadFocus = actions.contains(document.activeElement);
    fill(
      actions,
      draining ? undrain : drain,
      h("span", { id: "drain-help", class: "muted small" }, draining ? "Let the planner place modules here again." : "Move its modules to other nodes and give it an empty table."),
    );
    if (hadFocus) (draining ? undrain : drain).focus();
  };

  const refresh = liveRefresh(ctx, body, { on: ["nodes", "pass"], every: 500 }, async () => {
    const [node, health] = await Promise.all([api(path), api(`${path}/health`).catch(() => null)]);
    if (!ctx.current()) return;
    showActions(node.status);
    const failed = Object.entries(node.failed || {});
    const inSync = node.appliedGeneration === node.generation;
    refill(
      body,
      facts([
        ["Health", statusBadge(node.status)],
        ["Region", h("a", { href: `#/nodes?region=${encodeURIComponent(node.region)}` }, node.region)],
        ["URL", h("code", {}, node.url)],
        ["Assignment", [`generation ${node.appliedGeneration} of ${node.generation} applied `, badge(inSync ? "Ready" : "Pending", inSync ? "in sync" : "catching up")]],
        ["Capacity", `${(node.modules || []).length} of ${node.maxModules} module versions`],
        ["Last heartbeat", node.lastHeartbeat ? [heartbeatCell(node.lastHeartbeat), ` (${fmt.time(node.lastHeartbeat)})`] : "never"],
      ]),
      h("h2", {}, "Health"),
      health
        ? h(
            "div",
            { "data-testid": "node-health" },
            facts([
              ["Status", badge(health.status)],
              ["CPU", cpu(health.cpuUsagePercent)],
              ["Memory", memory(health.memoryUsageMB)],
              ["Modules deployed", String(health.modulesDeployed)],
              ["Runtime", h("code", {}, health.wasmRuntimeVersion)],
            ]),
          )
        : h("p", { class: "muted" }, "Health is not available."),
      h("h2", {}, "What it runs"),
      (node.modules || []).length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Module", "Version", "Digest", "Weight"].map((label, i) => h("th", { scope: "col", class: i === 3 ? "num" : undefined }, label)))),
            h(
              "tbody",
              {},
              node.modules.map((m) =>
                h(
                  "tr",
                  { "data-testid": "node-module-row", "data-module": m.module, "data-version": m.version },
                  h("td", {}, h("a", { href: `#/modules/${encodeURIComponent(`${m.module}-v${m.version}`)}`, "data-focus": `${m.module}@${m.version}` }, m.module)),
                  h("td", { class: "mono" }, m.version),
                  h("td", {}, h("code", { title: m.digest }, fmt.sha(String(m.digest || "").replace(/^sha256:/, "")))),
                  h("td", { class: "num" }, h("meter", { min: "0", max: "100", value: String(m.weight), "aria-hidden": "true" }), ` ${m.weight}%`),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, node.status === "Draining" ? "Nothing: the node is drained." : "Nothing yet."),
      failed.length
        ? [
            h("h2", {}, "Failed to load"),
            h(
              "ul",
              { class: "failures", "data-testid": "node-failed" },
              failed.map(([what, why]) => h("li", {}, badge("Failed", "failed"), " ", h("code", {}, what), ": ", why)),
            ),
          ]
        : null,
    );
  });
}

export async function render(ctx) {
  if (ctx.params.length) return renderOne(ctx, ctx.params.join("/"));
  return renderList(ctx);
}
