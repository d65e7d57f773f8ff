// Interfaces: the WIT interfaces of the revision followed (GET /api/v1/wasm/interfaces, see
// reconciler/api/interfaces.py), and one interface: its package, status, functions, worlds, its
// WIT text and the modules that implement it (with their registered versions).

import { api, badge, facts, fill, fmt, h, listScreen, problem, searchBox, throttle } from "../lib.js";

function statusBadge(item) {
  return h("span", { "data-testid": "interface-status" }, item.deprecated ? badge("Paused", "deprecated") : badge("Active", item.status || "active"));
}

function functionsText(item) {
  const parts = Object.entries(item.interfaces || {}).map(([name, functions]) => `${name}: ${functions.join(", ")}`);
  return parts.length ? h("span", { class: "mono" }, parts.join("; ")) : h("span", { class: "muted" }, "—");
}

function implementers(item) {
  const names = item.implementedBy || [];
  if (!names.length) return h("span", { class: "muted" }, "no module");
  return names.map((name, i) => [i ? ", " : "", h("a", { href: `#/modules/${encodeURIComponent(name)}`, "data-testid": "interface-implementer" }, name)]);
}

function refill(target, ...children) {
  const active = document.activeElement;
  const key = active && target.contains(active) ? active.getAttribute("href") : null;
  fill(target, ...children);
  if (key) target.querySelector(`[href="${CSS.escape(key)}"]`)?.focus();
}

async function renderList(ctx) {
  let q = ctx.query.get("q") || "";
  let items = null;
  const results = h("div", { "data-testid": "interface-list" }, h("p", { class: "muted" }, "Loading…"));
  const search = searchBox(
    "Filter interfaces by name or package",
    q,
    (text) => {
      q = text;
      history.replaceState(null, "", `#/interfaces${q ? `?q=${encodeURIComponent(q)}` : ""}`);
      show();
    },
    { "data-testid": "interface-search" },
  );
  listScreen(ctx, "Interfaces", "The WIT interfaces of the revision followed, and the modules that implement them.", search, results);

  const show = () => {
    if (items === null) return;
    const needle = q.toLowerCase();
    const rows = needle ? items.filter((i) => [i.name, i.package].some((t) => String(t || "").toLowerCase().includes(needle))) : items;
    if (!rows.length) {
      refill(results, h("p", { class: "muted empty" }, items.length ? `No interface matches “${q}”.` : "The fleet declares no Interface."));
      return;
    }
    refill(
      results,
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Name", "Package", "Version", "Status", "WASI", "Functions", "Implemented by"].map((label) => h("th", { scope: "col" }, label)))),
        h(
          "tbody",
          {},
          rows.map((item) =>
            h(
              "tr",
              { "data-testid": "interface-row", "data-interface": item.id },
              h("td", {}, h("a", { href: `#/interfaces/${encodeURIComponent(item.id)}` }, item.name)),
              h("td", {}, h("code", {}, item.package)),
              h("td", { class: "mono" }, item.version || "—"),
              h("td", {}, statusBadge(item)),
              h("td", {}, item.wasi || "—"),
              h("td", {}, functionsText(item)),
              h("td", {}, implementers(item)),
            ),
          ),
        ),
      ),
      h("p", { class: "muted", role: "status" }, `${rows.length} of ${items.length} interface${items.length === 1 ? "" : "s"}`),
    );
  };

  const refresh = throttle(async () => {
    if (!ctx.current()) return;
    try {
      const data = await api("/api/v1/wasm/interfaces");
      if (!ctx.current()) return;
      items = (data && data.interfaces) || [];
      show();
    } catch (error) {
      if (ctx.current()) refill(results, problem(error));
    }
  }, 0);
  refresh();
  ctx.on("pass", throttle(refresh, 1000));
}

async function renderOne(ctx, id) {
  ctx.title(`Interface ${id}`);
  const body = h("div", { "data-testid": "interface-detail" }, h("p", { class: "muted" }, "Loading…"));
  const title = h("h1", {}, `Interface ${id}`);
  fill(ctx.root, h("p", {}, h("a", { href: "#/interfaces" }, "← Interfaces")), h("div", { class: "heading" }, title), body);
  let lastDigest;

  const refresh = throttle(async () => {
    if (!ctx.current()) return;
    try {
      const item = await api(`/api/v1/wasm/interfaces/${encodeURIComponent(id)}`);
      if (!ctx.current()) return;
      const key = `${item.digest}|${item.package}|${item.deprecated}|${(item.implementedBy || []).join(",")}`;
      if (key === lastDigest) return;
      lastDigest = key;
      const versions = h("div", {}, h("p", { class: "muted" }, "Loading…"));
      fill(title, `Interface ${item.name}`);
      refill(
        body,
        item.deprecated ? h("p", { class: "notice", role: "note" }, h("strong", {}, "Deprecated. "), item.deprecationMessage || "Modules should move to a newer interface.") : null,
        facts([
          ["Status", statusBadge(item)],
          ["Package", h("code", {}, item.package)],
          ["Version", h("span", { class: "mono" }, item.version || "—")],
          ["WASI", item.wasi || "—"],
          ["Digest", item.digest ? h("code", { class: "wrap" }, item.digest) : h("span", { class: "muted" }, "the WIT did not parse at this revision")],
          ["Worlds", (item.worlds || []).length ? h("span", { class: "mono" }, item.worlds.join(", ")) : "—"],
          ["Declared in", item.file ? h("code", {}, item.file) : "—"],
        ]),
        h("h2", {}, "Functions"),
        Object.keys(item.interfaces || {}).length
          ? h(
              "table",
              {},
              h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Interface"), h("th", { scope: "col" }, "Functions"))),
              h(
                "tbody",
                {},
                Object.entries(item.interfaces).map(([name, functions]) => h("tr", {}, h("td", {}, h("code", {}, name)), h("td", { class: "mono" }, functions.join(", ")))),
              ),
            )
          : h("p", { class: "muted" }, "No interface in this package."),
        h("h2", {}, "Implemented by"),
        versions,
        h("h2", { id: "wit-title" }, "WIT"),
        item.wit
          ? h("pre", { "data-testid": "interface-wit", "aria-labelledby": "wit-title", tabindex: "0" }, h("code", {}, item.wit))
          : h("p", { class: "muted" }, "The WIT text could not be read from the revision."),
      );
      const names = item.implementedBy || [];
      if (!names.length) {
        fill(versions, h("p", { class: "muted" }, "No module of the fleet declares that it implements this interface."));
        return;
      }
      const lists = await Promise.all(
        names.map((name) =>
          api("/api/v1/wasm/modules", { query: { name } })
            .then((data) => (data && data.modules) || [])
            .catch(() => null),
        ),
      );
      if (!ctx.current()) return;
      fill(
        versions,
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Module"), h("th", { scope: "col" }, "Registered versions"))),
          h(
            "tbody",
            {},
            names.map((name, i) =>
              h(
                "tr",
                { "data-testid": "interface-implementer-row", "data-module": name },
                h("td", {}, h("a", { href: `#/modules/${encodeURIComponent(name)}`, "data-testid": "interface-implementer" }, name)),
                h(
                  "td",
                  {},
                  lists[i] === null
                    ? "—"
                    : lists[i].length
                      ? lists[i].map((m, j) => [j ? ", " : "", h("a", { href: `#/modules/${encodeURIComponent(m.id)}`, title: `${fmt.sha(m.digest.replace(/^sha256:/, ""))}` }, m.version)])
                      : h("span", { class: "muted" }, "none registered"),
                ),
              ),
            ),
          ),
        ),
      );
    } catch (error) {
      if (ctx.current()) refill(body, problem(error));
    }
  }, 0);
  refresh();
  ctx.on("pass", throttle(refresh, 1000));
}

export async function render(ctx) {
  if (ctx.params.length) return renderOne(ctx, ctx.params.join("/"));
  return renderList(ctx);
}
