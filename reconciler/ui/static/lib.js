// What every screen of the console shares: the API client and list paging, the session, the live
// stream, a DOM builder that never parses HTML, formatting, and a few widgets (status badge, pager,
// search box, a live refresh).
//
// Screens live in views/<name>.js and export `render(ctx)` (see app.js for ctx). They build DOM
// with `h()` only: text is always text, so nothing a fleet's YAML says can become markup.

export class ApiError extends Error {
  constructor(status, error, message, body) {
    super(message);
    this.status = status;
    this.error = error;
    this.body = body;
  }
}

// The signed-in caller: {subject, roles: [...], csrf, expiresAt}; null before sign-in.
export const session = { current: null };

export function can(...roles) {
  const mine = session.current ? session.current.roles : [];
  return roles.some((role) => mine.includes(role));
}

// Roles allowed to change rollouts and nodes through the API (reconciler/api/*.py decide; these
// only shape what is shown, the server refuses the rest).
export const WRITERS = { rollout: ["admin", "operator"], approve: ["admin"], node: ["admin", "operator"] };

// JSON from the control plane; writes carry the session's CSRF token. Throws ApiError.
export async function api(path, { method = "GET", body, query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
    }
    const text = params.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  const headers = { Accept: "application/json" };
  if (method !== "GET" && session.current) headers["X-CSRF-Token"] = session.current.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    const message = (data && data.message) || `${method} ${path}: HTTP ${response.status}`;
    throw new ApiError(response.status, (data && data.error) || "http", message, data);
  }
  return data;
}

// Every item of a list endpoint (the answer's `key`), in pages of `size` when the server pages.
export async function fetchAll(path, key, size = 1000) {
  const all = [];
  for (let offset = 0; ; offset += size) {
    const data = await api(path, { query: { limit: size, offset } });
    const page = (data && data[key]) || [];
    all.push(...page);
    if (!data || typeof data.total !== "number" || !page.length || all.length >= data.total) return all;
  }
}

// One page of a list endpoint: {items, total, offset}. When the server pages (its answer has
// "total") it also filtered by `query`; otherwise the whole list came and is filtered with
// keep(item) and cut here.
export async function fetchPage(path, key, { offset, limit, query = {}, keep = () => true }) {
  const data = await api(path, { query: { limit, offset, ...query } });
  const items = (data && data[key]) || [];
  if (data && typeof data.total === "number") return { items, total: data.total, offset: data.offset ?? offset };
  const found = items.filter(keep);
  const start = Math.min(offset, Math.max(0, found.length - 1 - ((found.length - 1) % limit)));
  return { items: found.slice(start, start + limit), total: found.length, offset: start };
}

// h("a", {href: "#/x", class: "y", onclick: fn}, "text", child, [more]) -> Element.
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      element.className = value;
    } else if (key === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(key, "");
    } else {
      element.setAttribute(key, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Replace an element's content with children.
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

// The live stream: one EventSource on /ui/events for the whole page; reconnects by itself.
// Messages are JSON with "kind": hello, event, pass, nodes, audit.
export const live = {
  state: "connecting",
  handlers: new Set(),
  stateHandlers: new Set(),
  source: null,
  start() {
    if (this.source) return;
    const source = new EventSource("/ui/events");
    this.source = source;
    source.onopen = () => this.setState("live");
    source.onerror = () => this.setState(source.readyState === EventSource.CLOSED ? "offline" : "reconnecting");
    source.onmessage = (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      this.setState("live");
      for (const handler of [...this.handlers]) handler(data);
    };
  },
  stop() {
    if (this.source) this.source.close();
    this.source = null;
    this.setState("offline");
  },
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    for (const handler of [...this.stateHandlers]) handler(state);
  },
  // fn(message) for every message whose kind is in kinds ("*" for all); returns unsubscribe.
  on(kinds, fn) {
    const wanted = Array.isArray(kinds) ? kinds : [kinds];
    const handler = (data) => {
      if (wanted.includes("*") || wanted.includes(data.kind)) fn(data);
    };
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  },
};

// Run fn at most once per `ms`, trailing: many messages in a burst cause one refresh.
export function throttle(fn, ms = 200) {
  let timer = null;
  let again = false;
  const run = async () => {
    timer = null;
    again = false;
    try {
      await fn();
    } catch (error) {
      // A refresh that finds the session gone (signed out, expired) says so once for the page; it is
      // not a script error. Anything else is.
      if (!(error instanceof ApiError && error.status === 401)) throw error;
      window.dispatchEvent(new CustomEvent("hotswap:unauthorized"));
    } finally {
      if (again && timer === null) timer = setTimeout(run, ms);
    }
  };
  return () => {
    if (timer !== null) {
      again = true;
      return;
    }
    timer = setTimeout(run, ms);
  };
}

// Formatting --------------------------------------------------------------------------------

function asDate(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return new Date(value < 1e12 ? value * 1000 : value);
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

export const fmt = {
  time(value) {
    const date = asDate(value);
    return date ? date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "—";
  },
  ago(value) {
    const date = asDate(value);
    if (!date) return "—";
    const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (seconds < 60) return `${seconds}s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
    return `${Math.round(seconds / 86400)}d ago`;
  },
  bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KB", "MB", "GB"];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
  },
  pct(x, digits = 1) {
    return x === null || x === undefined ? "—" : `${(Number(x) * 100).toFixed(digits)}%`;
  },
  percent(x, digits = 0) {
    return x === null || x === undefined ? "—" : `${Number(x).toFixed(digits)}%`;
  },
  ms(x) {
    return x === null || x === undefined ? "—" : `${Number(x).toFixed(Number(x) < 10 ? 1 : 0)} ms`;
  },
  sha(value) {
    return value ? String(value).slice(0, 10) : "—";
  },
};

// Widgets -----------------------------------------------------------------------------------

// A status shown by a word and a symbol, coloured as a third cue only.
const TONES = {
  good: ["Healthy", "Ready", "Promoted", "Succeeded", "Completed", "True", "verified", "Delivered", "delivered", "ok", "Active", "Approved"],
  warn: ["Progressing", "Paused", "Waiting", "WaitingApproval", "Pending", "Degraded", "Draining", "Drained", "Unknown", "pending", "Reconnecting"],
  bad: ["Failed", "RolledBack", "Unhealthy", "Stalled", "Offline", "False", "Aborted", "failed", "error", "Error", "Rejected"],
};
const SYMBOLS = { good: "✓", warn: "◐", bad: "✕", none: "•" };

export function tone(status) {
  for (const [name, words] of Object.entries(TONES)) if (words.includes(String(status))) return name;
  return "none";
}

export function badge(status, label) {
  const kind = tone(status);
  return h("span", { class: `badge ${kind}` }, h("span", { "aria-hidden": "true" }, SYMBOLS[kind]), " ", label ?? String(status ?? "—"));
}

// A searchable list screen: its heading, a line on what it lists, the search box and the list.
export function listScreen(ctx, title, about, search, results) {
  fill(ctx.root, heading(title), h("p", { class: "muted" }, about), h("div", { class: "toolbar" }, search), results);
}

// Write a screen's filters into the address (#/<screen>?key=value…, empty ones left out) without
// a new history entry, so that a reload or a shared link shows the same list.
export function rememberQuery(screen, values) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) if (value) query.set(key, String(value));
  const text = query.toString();
  history.replaceState(null, "", `#/${screen}${text ? `?${text}` : ""}`);
}

// A heading row with a title and optional actions on the right.
export function heading(title, ...actions) {
  return h("div", { class: "heading" }, h("h1", {}, title), h("div", { class: "actions" }, actions));
}

// A table from rows: columns = [{label, cell: row => node|string, class?}]. Empty -> a message.
export function table(columns, rows, { empty = "Nothing here.", caption } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h(
    "table",
    {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.class }, c.cell(row)))))),
  );
}

// "Showing 1–50 of 1000" with previous/next buttons; onPage(newOffset).
export function pager({ total, offset, limit, onPage }) {
  const first = total === 0 ? 0 : offset + 1;
  const last = Math.min(offset + limit, total);
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", "data-focus": "pager-previous", disabled: offset <= 0, onclick: () => onPage(Math.max(0, offset - limit)) }, "‹ Previous"),
    h("span", { role: "status" }, `${first}–${last} of ${total}`),
    h("button", { type: "button", "data-focus": "pager-next", disabled: last >= total, onclick: () => onPage(offset + limit) }, "Next ›"),
  );
}

// Under one page of a paged list: the pager when there is more than one page, else `count`.
export function pageFooter(page, limit, onPage, count) {
  if (page.total <= limit && page.offset <= 0) return h("p", { class: "muted", role: "status" }, count);
  return pager({ total: page.total, offset: page.offset, limit, onPage });
}

// Re-render `target` without losing the keyboard focus on a control inside it marked `data-focus`
// (the pager's buttons are): a live refresh or a page turn must not throw the focus away.
export function refill(target, ...children) {
  const active = document.activeElement;
  const key = active && target.contains(active) ? active.getAttribute("data-focus") : null;
  fill(target, ...children);
  if (key) target.querySelector(`[data-focus="${CSS.escape(key)}"]`)?.focus();
}

// A form control with its label before it: [label, control]; the control has an id.
export function labelled(text, control) {
  return [h("label", { for: control.id }, text), control];
}

// A search box that calls onSearch(text) as the user types (debounced); attrs are added to the input.
export function searchBox(label, value, onSearch, attrs = {}) {
  let timer = null;
  const input = h("input", { type: "search", value: value || "", "aria-label": label, placeholder: label, ...attrs });
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => onSearch(input.value.trim()), 250);
  });
  return input;
}

// A message area for an error (role=alert) or a notice.
export function problem(error) {
  const text = error instanceof ApiError ? `${error.message} (${error.status} ${error.error})` : String(error && error.message ? error.message : error);
  return h("p", { class: "problem", role: "alert" }, text);
}

// A screen's live part: load(wanted) now, and again (at most once per `every` ms) on the live
// messages of the kinds `on` while the screen is shown; what fails is said in `target`. Runs can
// overlap, so wanted() says whether this one still counts: the screen is shown and no later run
// (another page, a filter) has started. Returns the refresh, for a change made on the screen.
export function liveRefresh(ctx, target, { on, every }, load) {
  let runs = 0;
  const refresh = throttle(async () => {
    if (!ctx.current()) return;
    const run = ++runs;
    try {
      await load(() => ctx.current() && run === runs);
    } catch (error) {
      if (ctx.current()) refill(target, problem(error));
    }
  }, 0);
  refresh();
  ctx.on(on, throttle(refresh, every));
  return refresh;
}

// A button that runs an async action, disables itself while it runs and shows the outcome in `out`.
export function actionButton(label, action, { out, confirm: question, kind = "" } = {}) {
  const button = h("button", { type: "button", class: kind }, label);
  button.addEventListener("click", async () => {
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    try {
      const result = await action();
      if (out) fill(out, h("span", { role: "status" }, typeof result === "string" ? result : `${label}: done`));
    } catch (error) {
      if (out) fill(out, problem(error));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

// Definition list from [label, value] pairs (value a node or text).
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? "—")]));
}

export function link(hash, text) {
  return h("a", { href: hash }, text);
}
