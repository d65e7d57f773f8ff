// Modules: every registered module version (GET /api/v1/wasm/modules, paged and searched on the
// server when it answers with "total"), where each version runs and its share of its module's
// traffic (summed from the node list's running tables, fetched once per refresh), and one version's
// digest, size, imports, exports and the nodes that run it.

import { api, badge, facts, fetchAll, fetchPage, fill, fmt, h, heading, listScreen, liveRefresh, pageFooter, problem, refill, rememberQuery, searchBox, table, throttle } from "../lib.js";

const LIMIT = 50;

// Every node, in pages of 1,000 when the server pages.
const allNodes = () => fetchAll("/api/v1/wasm/nodes", "nodes");

// name -> version -> {nodes: [{id, region, status, weight}], weight}; name -> total weight.
function placement(nodes) {
  const byModule = new Map();
  const totals = new Map();
  for (const node of nodes) {
    for (const m of node.modules || []) {
      if (!byModule.has(m.module)) byModule.set(m.module, new Map());
      const versions = byModule.get(m.module);
      if (!versions.has(m.version)) versions.set(m.version, { nodes: [], weight: 0 });
      const entry = versions.get(m.version);
      entry.nodes.push({ id: node.id, region: node.region, status: node.status, weight: m.weight, digest: m.digest });
      entry.weight += m.weight;
      totals.set(m.module, (totals.get(m.module) || 0) + m.weight);
    }
  }
  return {
    of(name, version) {
      const entry = byModule.get(name)?.get(version);
      const total = totals.get(name) || 0;
      return { nodes: entry ? entry.nodes : [], share: entry && total ? entry.weight / total : 0 };
    },
  };
}

function whereText(nodes) {
  if (!nodes.length) return h("span", { class: "muted" }, "nowhere");
  const regions = [...new Set(nodes.map((n) => n.region))].sort();
  const serving = nodes.filter((n) => n.weight > 0).length;
  const idle = serving === nodes.length ? "" : ` (${serving ? `${serving} serving` : "loaded, no traffic"})`;
  return `${nodes.length} node${nodes.length === 1 ? "" : "s"}${idle} · ${regions.join(", ")}`;
}

function shareCell(share, running) {
  if (!running) return h("span", { class: "muted" }, "—");
  const percent = Math.round(share * 1000) / 10;
  return h(
    "span",
    { class: "share" },
    h("meter", { min: "0", max: "100", value: String(percent), "aria-hidden": "true" }),
    ` ${percent}%`,
  );
}

// Whether a module version matches the search text q (lower case).
const matching = (q) => (module) => [module.id, module.name, module.version].some((text) => String(text).toLowerCase().includes(q));

const COLUMNS = [
  { label: "Name", cell: (m) => h("a", { href: `#/modules/${encodeURIComponent(m.id)}`, "data-focus": m.id }, m.name) },
  { label: "Version", cell: (m) => h("span", { class: "mono" }, m.version) },
  { label: "Digest", cell: (m) => h("code", { title: m.digest }, fmt.sha(String(m.digest).replace(/^sha256:/, ""))) },
  { label: "Size", class: "num", cell: (m) => fmt.bytes(m.size) },
  { label: "Exports", cell: (m) => exportsText(m) },
  { label: "Runs on", cell: (m) => whereText(m.where.nodes) },
  { label: "Traffic share", class: "num", cell: (m) => shareCell(m.where.share, m.where.nodes.length) },
];

async function renderList(ctx) {
  const state = { q: ctx.query.get("q") || "", offset: Math.max(0, Number(ctx.query.get("offset")) || 0) };
  const results = h("div", { "data-testid": "module-list" }, h("p", { class: "muted" }, "Loading…"));
  const setFilter = (change) => {
    Object.assign(state, change, { offset: 0 });
    refresh();
  };
  const search = searchBox("Search modules by name, version or id", state.q, (q) => setFilter({ q }), { "data-testid": "module-search", maxlength: "200" });
  listScreen(ctx, "Modules", "Every registered module version, where it runs and its share of its module’s traffic.", search, results);

  const refresh = liveRefresh(ctx, results, { on: ["nodes", "pass"], every: 1000 }, async (wanted) => {
    const query = { q: state.q };
    const keep = matching(state.q.toLowerCase());
    const [page, nodes] = await Promise.all([fetchPage("/api/v1/wasm/modules", "modules", { offset: state.offset, limit: LIMIT, query, keep }), allNodes()]);
    if (!wanted()) return; // a later request (another page, a filter) wins
    state.offset = page.offset;
    rememberQuery("modules", state);
    const where = placement(nodes);
    const rows = page.items.map((m) => ({ ...m, where: where.of(m.name, m.version) }));
    const turn = (offset) => {
      state.offset = offset;
      refresh();
    };
    refill(
      results,
      tableWithRows(COLUMNS, rows, (m) => ({ "data-testid": "module-row", "data-module": m.id }), {
        empty: state.q ? `No module version matches “${state.q}”.` : "No module is registered yet.",
        caption: "Module versions",
      }),
      pageFooter(page, LIMIT, turn, `${page.total} version${page.total === 1 ? "" : "s"}`),
    );
  });
}

function exportsText(module) {
  const names = (module.exports || []).filter((e) => e.kind === "func").map((e) => e.name);
  if (!names.length) return h("span", { class: "muted" }, "none");
  const shown = names.slice(0, 6).join(", ");
  return h("span", { class: "mono", title: names.join(", ") }, names.length > 6 ? `${shown}, … (${names.length})` : shown);
}

// A table like lib.js's table(), with attributes on each row (test hooks).
function tableWithRows(columns, rows, rowAttrs, { empty = "Nothing here.", caption } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h(
    "table",
    {},
    caption ? h("caption", { class: "visually-hidden" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", rowAttrs(row), columns.map((c) => h("td", { class: c.class }, c.cell(row)))))),
  );
}

// #/modules/<name>: every registered version of one module, side by side.
async function renderName(ctx, name, versions) {
  ctx.title(`Module ${name}`);
  const results = h("div", { "data-testid": "module-versions" });
  const rollout = h("div", { "data-testid": "module-rollout" });
  fill(
    ctx.root,
    h("p", {}, h("a", { href: "#/modules" }, "← Modules")),
    heading(`Module ${name}`),
    h("p", { class: "muted" }, "Its registered versions, where each runs and its share of the module’s traffic."),
    rollout,
    results,
  );
  const showRollout = throttle(async () => {
    try {
      const data = await api("/api/v1/wasm/deployments", { query: { module: name } });
      const list = (data && data.deployments) || [];
      const last = list[list.length - 1];
      if (!ctx.current()) return;
      fill(
        rollout,
        last
          ? h(
              "p",
              {},
              "Latest rollout: ",
              h("a", { href: `#/rollouts/${encodeURIComponent(last.id)}` }, last.id),
              ` (${last.fromVersion ?? "nothing"} → ${last.toVersion}) `,
              badge(last.phase),
              list.length > 1 ? h("span", { class: "muted" }, ` · ${list.length} rollouts in all`) : null,
            )
          : null,
      );
    } catch {
      fill(rollout);
    }
  }, 0);
  showRollout();
  ctx.on(["event", "pass"], throttle(showRollout, 1000));
  liveRefresh(ctx, results, { on: ["nodes", "pass"], every: 1000 }, async () => {
    const [data, nodes] = await Promise.all([
      versions ? Promise.resolve({ modules: versions }) : api("/api/v1/wasm/modules", { query: { name, limit: 1000 } }),
      allNodes(),
    ]);
    versions = null;
    if (!ctx.current()) return;
    const where = placement(nodes);
    const rows = ((data && data.modules) || []).filter((m) => m.name === name).map((m) => ({ ...m, where: where.of(m.name, m.version) }));
    refill(
      results,
      tableWithRows(COLUMNS, rows, (m) => ({ "data-testid": "module-row", "data-module": m.id }), {
        empty: `No version of ${name} is registered.`,
        caption: `Versions of ${name}`,
      }),
    );
  });
}

async function renderOne(ctx, id) {
  ctx.title(`Module ${id}`);
  const body = h("div", { "data-testid": "module-detail" }, h("p", { class: "muted" }, "Loading…"));
  const running = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  fill(ctx.root, h("p", {}, h("a", { href: "#/modules" }, "← Modules")), heading(id), body);

  let module;
  try {
    module = await api(`/api/v1/wasm/modules/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status === 401) throw error;
    if (error.status === 404) {
      // a module name rather than a version id (#/modules/greeter): show its versions
      const found = await api("/api/v1/wasm/modules", { query: { name: id, limit: 1000 } }).catch(() => null);
      const versions = ((found && found.modules) || []).filter((m) => m.name === id);
      if (!ctx.current()) return;
      if (versions.length) return renderName(ctx, id, versions);
    }
    fill(body, problem(error));
    return;
  }
  if (!ctx.current()) return;
  const wasi = module.wasi || {};
  const build = module.build || {};
  const others = h("span", { class: "muted" }, "…");
  fill(
    body,
    facts([
      ["Module", h("a", { href: `#/modules/${encodeURIComponent(module.name)}` }, module.name)],
      ["Version", h("span", { class: "mono" }, module.version)],
      ["Digest", h("code", { "data-testid": "module-digest", class: "wrap" }, module.digest)],
      ["Size", `${fmt.bytes(module.size)} (${module.size} bytes; ${fmt.bytes(module.compressedSize)} stored)`],
      ["Kind", module.component ? "component" : "core module"],
      ["WASI", wasi.version ? wasi.version : "none"],
      ["Capabilities", (wasi.capabilities || []).length ? wasi.capabilities.join(", ") : "none"],
      ["Memory", `${module.memoryMinPages} page${module.memoryMinPages === 1 ? "" : "s"} minimum (${fmt.bytes((module.memoryMinPages || 0) * 65536)})`],
      ["Build", build.commit || build.timestamp ? [build.commit ? h("code", {}, fmt.sha(build.commit)) : "", build.timestamp ? ` ${build.timestamp}` : ""] : h("span", { class: "muted" }, "not recorded")],
      ["Registered", fmt.time(module.createdAt)],
      ["Other versions", others],
    ]),
    h("h2", { id: "where" }, "Where it runs"),
    running,
    h("h2", {}, "Exports"),
    table(
      [
        { label: "Name", cell: (e) => h("code", {}, e.name) },
        { label: "Kind", cell: (e) => e.kind },
        { label: "Signature", cell: (e) => (e.signature ? h("code", {}, e.signature) : "—") },
        { label: "Convention", cell: (e) => e.convention || "—" },
      ],
      module.exports || [],
      { empty: "It exports nothing." },
    ),
    h("h2", {}, "Imports"),
    table(
      [
        { label: "Module", cell: (i) => h("code", {}, i.module) },
        { label: "Name", cell: (i) => h("code", {}, i.name) },
        { label: "Kind", cell: (i) => i.kind },
      ],
      module.imports || [],
      { empty: "It imports nothing." },
    ),
  );

  api("/api/v1/wasm/modules", { query: { name: module.name } })
    .then((data) => {
      const versions = ((data && data.modules) || []).filter((m) => m.id !== module.id);
      fill(
        others,
        versions.length
          ? versions.map((m, i) => [i ? ", " : "", h("a", { href: `#/modules/${encodeURIComponent(m.id)}` }, m.version)])
          : "none",
      );
    })
    .catch(() => fill(others, "—"));

  liveRefresh(ctx, running, { on: ["nodes", "pass"], every: 1000 }, async () => {
    const nodes = await allNodes();
    if (!ctx.current()) return;
    const { nodes: on, share } = placement(nodes).of(module.name, module.version);
    const other = on.filter((n) => n.digest && n.digest !== module.digest);
    refill(
      running,
      on.length
        ? h("p", {}, `${whereText(on)}; ${Math.round(share * 1000) / 10}% of ${module.name}’s traffic across the fleet.`)
        : h("p", { class: "muted" }, `No node runs ${module.id} now.`),
      other.length ? h("p", { class: "notice" }, `${other.length} node(s) report a different digest for this version.`) : null,
      tableWithRows(
        [
          { label: "Node", cell: (n) => h("a", { href: `#/nodes/${encodeURIComponent(n.id)}`, "data-focus": n.id }, n.id) },
          { label: "Region", cell: (n) => n.region },
          { label: "Status", cell: (n) => badge(n.status) },
          { label: "Weight", class: "num", cell: (n) => `${n.weight}%` },
        ],
        on,
        (n) => ({ "data-testid": "module-node-row", "data-node": n.id }),
        { caption: "Nodes running this version" },
      ),
    );
  });
}

export async function render(ctx) {
  // a version id is name-vX.Y.Z (a name has no dots); anything else is a module name
  if (ctx.params.length) {
    const id = ctx.params.join("/");
    return /-v\d+\.\d+\.\d+/.test(id) ? renderOne(ctx, id) : renderName(ctx, id, null);
  }
  return renderList(ctx);
}
