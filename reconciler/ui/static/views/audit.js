// Audit: the control plane's append-only audit log, newest first, filterable by subject, action and
// free text, with "Load more" for older lines and new lines added live.
//
// GET /api/v1/wasm/audit reads oldest first after a sequence number (`after`, `limit` <= 1000;
// `subject` exact; `action` and `q` where the server knows them). Newest first is read backwards
// in windows of sequence numbers: the newest line is found once (one request for a short log, a
// few cheap probes with limit=1 for a long one), then each page is the window below the oldest line
// shown. Filters are applied here as well, so a server that ignores one still shows the right lines.

import { api, fill, fmt, h, heading, labelled, problem, rememberQuery, throttle } from "../lib.js";

const PATH = "/api/v1/wasm/audit";
const PAGE = 50;
const MAX = 1000;
const PROBE = 200;
const ACTIONS = [
  "module.register",
  "module.delete",
  "module.updateCommitted",
  "deployment.request",
  "deployment.approve",
  "rollout.",
  "rollout.rolloutStarted",
  "rollout.promoted",
  "rollout.rolledBack",
  "approval.found",
  "approval.rejected",
  "node.registered",
  "interface.propose",
  "interface.approve",
  "source.acceptRewrite",
  "source.",
  "notify.delivered",
  "notify.failed",
  "notify.dropped",
];

function wanted(entry, { subject, action, q }) {
  if (subject && entry.subject !== subject) return false;
  if (action) {
    const a = String(entry.action);
    if (!(a === action || (action.endsWith(".") ? a.startsWith(action) : a.startsWith(`${action}.`)))) return false;
  }
  if (q) {
    const needle = q.toLowerCase();
    const text = [entry.actor, entry.action, entry.subject, JSON.stringify(entry.detail ?? "")].join(" ").toLowerCase();
    if (!text.includes(needle)) return false;
  }
  return true;
}

async function get(after, limit, filters) {
  // a family ("rollout." or "rollout") is matched here only: the server's action filter is one action
  const action = /^[^.]+\.[^.]/.test(filters.action) ? filters.action : undefined;
  const data = await api(PATH, { query: { after, limit, subject: filters.subject, action, q: filters.q } });
  return (data && data.entries) || [];
}

// Matching lines with lo < seq < bound, oldest first.
async function range(lo, bound, filters) {
  const out = [];
  let after = lo;
  for (;;) {
    const entries = await get(after, MAX, filters);
    for (const e of entries) if (e.seq < bound && wanted(e, filters)) out.push(e);
    if (entries.length < MAX || entries[entries.length - 1].seq >= bound - 1) return out;
    after = entries[entries.length - 1].seq;
  }
}

// One more than the newest matching sequence number (0: nothing matches), and the lines already
// read when that was all of them. A long log is probed: forward in doubling steps, then halving,
// each probe a small page whose shortness, when it is short, names the newest line.
async function top(filters) {
  const first = await get(0, MAX, filters);
  if (first.length < MAX) return { bound: first.length ? first[first.length - 1].seq + 1 : 0, known: first.filter((e) => wanted(e, filters)) };
  let lo = first[first.length - 1].seq; // a line at lo
  let hi = null; // nothing after hi
  let step = MAX;
  for (;;) {
    const a = hi === null ? lo + step : hi - lo <= PROBE ? lo : Math.floor((lo + hi) / 2);
    const got = await get(a, PROBE, filters);
    if (got.length < PROBE && (got.length || a === lo)) return { bound: (got.length ? got[got.length - 1].seq : lo) + 1, known: null };
    if (got.length) {
      lo = got[got.length - 1].seq;
      step *= 2;
    } else hi = a;
  }
}

// Up to `want` newest matching lines below `bound`, newest first; `more` when older ones may exist.
async function olderThan(bound, want, filters, known) {
  if (known) {
    const below = known.filter((e) => e.seq < bound);
    return { entries: below.slice(-want).reverse(), more: below.length > want };
  }
  let width = want * 2;
  for (;;) {
    const lo = Math.max(0, bound - 1 - width);
    const found = await range(lo, bound, filters);
    if (found.length >= want || lo === 0) return { entries: found.slice(-want).reverse(), more: lo > 0 || found.length > want };
    width *= 4;
  }
}

function detailCell(detail) {
  if (detail === null || detail === undefined) return h("span", { class: "muted" }, "—");
  if (typeof detail !== "object") return String(detail);
  const pairs = Object.entries(detail).filter(([, v]) => v !== null && v !== undefined && !(Array.isArray(v) && !v.length));
  if (!pairs.length) return h("span", { class: "muted" }, "—");
  return h(
    "dl",
    { class: "kv" },
    pairs.map(([k, v]) => {
      const text = typeof v === "object" ? JSON.stringify(v) : String(v);
      const shown = /^[0-9a-f]{40}$/.test(text) || /^sha256:[0-9a-f]{64}$/.test(text) ? h("code", { title: text }, fmt.sha(text.replace(/^sha256:/, ""))) : text.length > 160 ? h("span", { title: text }, `${text.slice(0, 157)}…`) : text;
      return h("div", {}, h("dt", {}, k), h("dd", {}, shown));
    }),
  );
}

export async function render(ctx) {
  const filters = { subject: ctx.query.get("subject") || "", action: ctx.query.get("action") || "", q: ctx.query.get("q") || "" };
  let entries = [];
  let more = false;
  let newest = 0; // the newest matching sequence number read (new lines come after it)
  let known = null;
  let loading = null;
  let epoch = 0; // bumped when the filters change: answers for older filters are dropped

  const subjectInput = h("input", { type: "text", id: "audit-subject", "data-testid": "audit-filter-subject", value: filters.subject, placeholder: "e.g. greeter-v1.1.0", autocomplete: "off", maxlength: "200" });
  const actionInput = h("input", { type: "text", id: "audit-action", "data-testid": "audit-filter-action", value: filters.action, list: "audit-actions", placeholder: "e.g. rollout.", autocomplete: "off", maxlength: "200" });
  const textInput = h("input", { type: "search", id: "audit-q", "data-testid": "audit-search", value: filters.q, placeholder: "actor, subject, detail…", autocomplete: "off", maxlength: "200" });
  const apply = h("button", { type: "submit" }, "Filter");
  const clear = h("button", { type: "button", "data-testid": "audit-clear" }, "Clear");
  const form = h(
    "form",
    { class: "toolbar filters", role: "search", "aria-label": "Filter the audit log" },
    labelled("Text", textInput),
    labelled("Subject", subjectInput),
    labelled("Action", actionInput),
    h("datalist", { id: "audit-actions" }, ACTIONS.map((a) => h("option", { value: a }))),
    apply,
    clear,
  );
  const status = h("p", { class: "muted", role: "status", "data-testid": "audit-status" });
  const results = h("div", { "data-testid": "audit-list" }, h("p", { class: "muted" }, "Loading…"));
  const moreButton = h("button", { type: "button", "data-testid": "audit-more" }, "Load more");
  const footer = h("div", { class: "toolbar" });
  fill(ctx.root, heading("Audit log"), h("p", { class: "muted" }, "Who did what to the fleet, newest first: registrations, rollout steps, approvals, notifications."), form, status, results, footer);

  const setFilters = (change) => {
    Object.assign(filters, change);
    subjectInput.value = filters.subject;
    actionInput.value = filters.action;
    textInput.value = filters.q;
    rememberQuery("audit", { q: filters.q, subject: filters.subject, action: filters.action });
    reload();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setFilters({ subject: subjectInput.value.trim(), action: actionInput.value.trim(), q: textInput.value.trim() });
  });
  clear.addEventListener("click", () => setFilters({ subject: "", action: "", q: "" }));

  const filterButton = (label, change, text) =>
    h("button", { type: "button", class: "link-button", title: label, "aria-label": `${label}: ${text}`, onclick: () => setFilters(change) }, text);

  const show = () => {
    const active = document.activeElement;
    const focusKey = active && results.contains(active) ? active.getAttribute("aria-label") : null;
    const filtered = filters.subject || filters.action || filters.q;
    fill(
      results,
      entries.length
        ? h(
            "table",
            { "data-testid": "audit-table" },
            h("caption", { class: "visually-hidden" }, "Audit log, newest first"),
            h("thead", {}, h("tr", {}, ["#", "When", "Actor", "Action", "Subject", "Detail"].map((label, i) => h("th", { scope: "col", class: i === 0 ? "num" : undefined }, label)))),
            h(
              "tbody",
              {},
              entries.map((e) =>
                h(
                  "tr",
                  { "data-testid": "audit-row", "data-seq": String(e.seq), "data-action": e.action },
                  h("td", { class: "num muted" }, String(e.seq)),
                  h("td", { class: "nowrap" }, h("time", { datetime: e.at, title: fmt.time(e.at) }, fmt.time(e.at)), h("br"), h("span", { class: "muted small" }, fmt.ago(e.at))),
                  h("td", {}, filterButton("Show lines that mention this actor", { q: e.actor }, e.actor)),
                  h("td", {}, filterButton("Show this action only", { action: e.action }, e.action)),
                  h("td", {}, e.subject ? filterButton("Show lines about this subject only", { subject: e.subject }, e.subject) : "—"),
                  h("td", {}, detailCell(e.detail)),
                ),
              ),
            ),
          )
        : h("p", { class: "muted empty" }, filtered ? "No audit line matches these filters." : "The audit log is empty."),
    );
    fill(status, entries.length ? `${entries.length} line${entries.length === 1 ? "" : "s"} shown, newest first${filtered ? ", filtered" : ""}${more ? "; older lines below" : ""}.` : "");
    fill(footer, more ? moreButton : entries.length ? h("span", { class: "muted" }, "That is the oldest line.") : null);
    if (focusKey) [...results.querySelectorAll("button")].find((b) => b.getAttribute("aria-label") === focusKey)?.focus();
  };

  const reload = async () => {
    const mine = ++epoch;
    entries = [];
    more = false;
    fill(results, h("p", { class: "muted" }, "Loading…"));
    fill(footer);
    try {
      const head = await top(filters);
      if (mine !== epoch || !ctx.current()) return;
      known = head.known;
      newest = Math.max(0, head.bound - 1);
      const page = await olderThan(head.bound, PAGE, filters, known);
      if (mine !== epoch || !ctx.current()) return;
      entries = page.entries;
      more = page.more;
      if (entries.length) newest = Math.max(newest, entries[0].seq);
      show();
    } catch (error) {
      if (mine === epoch && ctx.current()) fill(results, problem(error));
    }
  };

  moreButton.addEventListener("click", async () => {
    if (loading) return;
    const mine = epoch;
    moreButton.disabled = true;
    loading = (async () => {
      try {
        const bound = entries.length ? entries[entries.length - 1].seq : newest + 1;
        const page = await olderThan(bound, PAGE, filters, known);
        if (mine !== epoch || !ctx.current()) return;
        const firstNew = page.entries.length ? page.entries[0].seq : null;
        entries = entries.concat(page.entries);
        more = page.more;
        show();
        // keep the keyboard where the reader was: on the first line that came in
        if (firstNew !== null) results.querySelector(`tr[data-seq="${firstNew}"] button`)?.focus();
        else if (more) moreButton.focus();
      } catch (error) {
        if (mine === epoch && ctx.current()) fill(footer, problem(error), moreButton);
      } finally {
        moreButton.disabled = false;
        loading = null;
      }
    })();
  });

  // New lines: everything after the newest one read, put on top.
  const fresh = throttle(async () => {
    if (!ctx.current()) return;
    const mine = epoch;
    try {
      const found = await range(newest, Infinity, filters);
      if (mine !== epoch || !ctx.current() || !found.length) return;
      const seen = new Set(entries.map((e) => e.seq));
      const added = found.filter((e) => !seen.has(e.seq));
      newest = Math.max(newest, found[found.length - 1].seq);
      if (known) known = known.concat(added);
      if (!added.length) return;
      entries = added.reverse().concat(entries);
      show();
    } catch {
      // the next message tries again
    }
  }, 300);

  await reload();
  ctx.on(["audit", "event"], fresh);
}
