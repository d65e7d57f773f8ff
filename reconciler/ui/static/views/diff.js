// Diff (#/diff?ref=<branch|tag|sha>): what the next pass would change if the fleet were at that
// commit (the same plan as `hotswap diff`), so a reviewer can see a pull request's effect before
// merging. No ref: the followed head. The ref stays in the URL hash, so a link can be shared.
//
// Reads GET /api/v1/wasm/diff?ref=... -> {ref, sha, author, message, verified, reason, actions,
// tables, lines, changes}; 404 for an unknown ref, 422 for a fleet that does not load.

import { ApiError, api, badge, facts, fill, fmt, h, heading, problem } from "../lib.js";

function weight(w) {
  return w === null || w === undefined ? "—" : `${w}`;
}

function change(c) {
  if (c.from === null || c.from === undefined) return "added";
  if (c.to === null || c.to === undefined) return "removed";
  return "changed";
}

export async function render(ctx) {
  const ref = ctx.query.get("ref") || "";
  ctx.title(ref ? `Diff ${ref}` : "Diff");
  const input = h("input", { type: "text", id: "diff-ref", name: "ref", value: ref, autocomplete: "off", spellcheck: "false", placeholder: "the followed head", "data-testid": "diff-ref" });
  const form = h(
    "form",
    { class: "diff-form", role: "search", "aria-label": "Diff of a ref" },
    h("label", { for: "diff-ref" }, "Branch, tag or commit", input),
    h("button", { type: "submit", class: "primary", "data-testid": "diff-submit" }, "Show diff"),
  );
  const out = h("div", { "data-testid": "diff-result", "aria-live": "polite", "aria-busy": "true" });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = input.value.trim();
    const hash = next ? `#/diff?ref=${encodeURIComponent(next)}` : "#/diff";
    if (location.hash === hash) show(next);
    else ctx.navigate(hash); // the router renders the screen again with the new ref
  });
  fill(
    ctx.root,
    heading("Diff"),
    h("p", { class: "muted" }, "What the next pass would change if the fleet repository were at this commit: the same plan as ", h("code", {}, "hotswap diff"), ". Leave it empty for the followed head."),
    form,
    out,
  );

  async function show(which) {
    out.setAttribute("aria-busy", "true");
    fill(out, h("p", { class: "muted" }, "Planning…"));
    let d;
    try {
      d = await api("/api/v1/wasm/diff", { query: { ref: which } });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      if (!ctx.current()) return;
      const title = error instanceof ApiError && error.status === 404 ? "Unknown ref" : error instanceof ApiError && error.status === 422 ? "The fleet at this commit does not load" : "Could not plan";
      fill(out, h("h2", {}, title), h("div", { "data-testid": "diff-error" }, problem(error)));
      out.setAttribute("aria-busy", "false");
      return;
    }
    if (!ctx.current()) return;
    ctx.title(`Diff ${d.ref || which || "head"}`);
    const actions = d.actions || [];
    const tables = (d.tables || []).filter((t) => (t.changes || []).length);
    fill(
      out,
      h("h2", {}, "Commit"),
      facts([
        ["Ref", d.ref || which || "followed head"],
        ["Commit", h("span", { class: "mono", title: d.sha, "data-testid": "diff-sha" }, d.sha || "—")],
        ["Author", d.author || "—"],
        ["Message", d.message ? h("span", { class: "commit-message" }, d.message.split("\n")[0]) : "—"],
        [
          "Verified",
          h("span", { "data-testid": "diff-verified" }, d.verified ? badge("verified", "verified") : badge("Unknown", "not verified"), d.verified ? "" : ` ${d.reason || ""}`),
        ],
      ]),
      d.changes === 0
        ? h("p", { class: "notice", "data-testid": "diff-no-changes" }, badge("ok", "No changes"), " The next pass would change nothing.")
        : [
            h("p", { "data-testid": "diff-count" }, `${d.changes} change${d.changes === 1 ? "" : "s"}.`),
            h("h2", {}, "Rollouts"),
            actions.length
              ? h(
                  "table",
                  { "data-testid": "diff-actions" },
                  h("thead", {}, h("tr", {}, ["Module", "What", "From → to", "Strategy"].map((t) => h("th", { scope: "col" }, t)))),
                  h(
                    "tbody",
                    {},
                    actions.map((a) =>
                      h(
                        "tr",
                        { "data-kind": a.kind, "data-module": a.module },
                        h("td", {}, a.module ? h("a", { href: `#/modules/${encodeURIComponent(a.module)}` }, a.module) : "—"),
                        h("td", {}, h("strong", {}, a.kind), " ", a.text || ""),
                        h("td", { class: "mono" }, a.from || a.to ? `${a.from || "—"} → ${a.to || a.version || "—"}` : a.version || "—"),
                        h("td", {}, a.strategy || "—"),
                      ),
                    ),
                  ),
                )
              : h("p", { class: "muted", "data-testid": "diff-actions" }, "No rollout starts or moves."),
            h("h2", {}, "Node tables"),
            tables.length
              ? h(
                  "table",
                  { "data-testid": "diff-tables" },
                  h("caption", {}, `${tables.length} node${tables.length === 1 ? "" : "s"} get a new table`),
                  h("thead", {}, h("tr", {}, ["Node", "Module", "Version", "Weight before", "Weight after", "Change"].map((t) => h("th", { scope: "col" }, t)))),
                  h(
                    "tbody",
                    {},
                    tables.flatMap((t) =>
                      t.changes.map((c, i) =>
                        h(
                          "tr",
                          { "data-node": t.node },
                          i === 0 ? h("th", { scope: "rowgroup", rowspan: String(t.changes.length) }, h("a", { href: `#/nodes/${encodeURIComponent(t.node)}` }, t.node)) : null,
                          h("td", {}, c.module),
                          h("td", { class: "mono" }, c.version),
                          h("td", { class: "num" }, weight(c.from)),
                          h("td", { class: "num" }, weight(c.to)),
                          h("td", { class: `diff-line ${change(c) === "added" ? "add" : change(c) === "removed" ? "remove" : ""}` }, change(c) === "added" ? "+ added" : change(c) === "removed" ? "− removed" : "~ changed"),
                        ),
                      ),
                    ),
                  ),
                )
              : h("p", { class: "muted" }, "No node's table changes."),
          ],
      (d.lines || []).length
        ? h("details", {}, h("summary", {}, "As ", h("code", {}, "hotswap diff"), " prints it"), h("pre", { "data-testid": "diff-lines" }, (d.lines || []).join("\n")))
        : null,
    );
    out.setAttribute("aria-busy", "false");
  }

  await show(ref);
}
