// The console's shell: sign-in, the hash router, the navigation, the live indicator.
//
// Routes are "#/<screen>/<param>?query". Each screen is views/<screen>.js exporting
// `render(ctx)`, with ctx = {root, params: [..path parts after the screen..], query:
// URLSearchParams, on(kinds, fn) (a live subscription dropped when the screen is left),
// navigate(hash), title(text)}. A screen that wants to stay live subscribes with ctx.on and
// re-renders its parts; the shell never reloads the page.

import { ApiError, api, fill, h, live, problem, session } from "./lib.js";

const SCREENS = {
  fleet: () => import("./views/fleet.js"),
  rollouts: () => import("./views/rollouts.js"),
  modules: () => import("./views/modules.js"),
  nodes: () => import("./views/nodes.js"),
  interfaces: () => import("./views/interfaces.js"),
  diff: () => import("./views/diff.js"),
  audit: () => import("./views/audit.js"),
  notifications: () => import("./views/notifications.js"),
};

const root = document.getElementById("view");
let leave = [];
let generation = 0;

function parse(hash) {
  const text = hash.replace(/^#\/?/, "");
  const [path, query = ""] = text.split("?", 2);
  const parts = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part; // a malformed %-escape stays as typed; the screen says it finds nothing
    }
  });
  return { screen: parts[0] || "fleet", params: parts.slice(1), query: new URLSearchParams(query) };
}

function markNav(screen) {
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${screen}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function leaveScreen() {
  for (const undo of leave) undo();
  leave = [];
  return ++generation;
}

async function route() {
  const mine = leaveScreen();
  if (!session.current) return showSignIn();
  const { screen, params, query } = parse(location.hash);
  const load = SCREENS[screen];
  markNav(screen);
  if (!load) {
    fill(root, h("h1", {}, "Not found"), h("p", {}, `There is no screen called “${screen}”. `, h("a", { href: "#/fleet" }, "Go to the fleet.")));
    return;
  }
  const ctx = {
    root,
    params,
    query,
    on(kinds, fn) {
      const off = live.on(kinds, (message) => {
        if (mine === generation) fn(message);
      });
      leave.push(off);
      return off;
    },
    navigate(hash) {
      location.hash = hash;
    },
    title(text) {
      document.title = `${text} · hotswap`;
    },
    current: () => mine === generation,
  };
  try {
    const view = await load();
    if (mine !== generation) return;
    fill(root);
    ctx.title(screen[0].toUpperCase() + screen.slice(1));
    await view.render(ctx);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return signedOut();
    if (mine === generation) fill(root, h("h1", {}, "Something went wrong"), problem(error));
  }
}

function showChrome(on) {
  document.getElementById("nav").hidden = !on;
  document.getElementById("who").hidden = !on;
  if (on) {
    const who = session.current;
    fill(document.getElementById("user"), `${who.subject} (${who.roles.join(", ") || "no role"})`);
  }
}

function showSignIn(message) {
  showChrome(false);
  document.title = "Sign in · hotswap";
  const out = h("div", { class: "out" });
  if (message) fill(out, h("p", { class: "problem", role: "alert" }, message));
  const token = h("textarea", { id: "token", name: "token", rows: "4", required: true, autocomplete: "off", spellcheck: "false" });
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to hotswap"),
    h("p", {}, "Follow the one-time link that ", h("code", {}, "hotswap up"), " printed, or paste an API token (", h("code", {}, "hotswap token --role viewer"), ")."),
    h("label", { for: "token" }, "API token"),
    token,
    h("button", { type: "submit" }, "Sign in"),
    out,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      session.current = await api("/ui/session", { method: "POST", body: { token: token.value.trim() } });
      start();
    } catch (error) {
      fill(out, problem(error));
    }
  });
  fill(root, form);
  token.focus();
}

function signedOut() {
  session.current = null;
  live.stop();
  leaveScreen();
  showSignIn("Your session ended; sign in again.");
}

function start() {
  showChrome(true);
  live.start();
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/fleet";
  else route();
}

const indicator = document.getElementById("live");
live.stateHandlers.add((state) => {
  indicator.textContent = state === "live" ? "● live" : state === "reconnecting" ? "○ reconnecting…" : "○ offline";
  indicator.dataset.state = state;
});

document.getElementById("signout").addEventListener("click", async () => {
  try {
    await api("/ui/session", { method: "DELETE" });
  } catch {
    // signed out locally either way
  }
  session.current = null;
  live.stop();
  leaveScreen(); // the screen's live refreshes end with it
  location.hash = "";
  showSignIn();
});

window.addEventListener("hotswap:unauthorized", () => {
  if (session.current) signedOut(); // signed out on purpose: nothing to say
});

window.addEventListener("hashchange", route);

(async () => {
  try {
    session.current = await api("/ui/session");
    start();
  } catch {
    showSignIn();
  }
})();
