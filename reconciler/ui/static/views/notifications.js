// Notifications: the notifier's receivers (one per Alert document) with their state, recent
// deliveries (failures called out in words), and the active scaling signals. GET
// /api/v1/wasm/notifications answers reconciler/notify/notifier.py `status()`; it is {} when the
// control plane runs without a notifier.

import { api, badge, fill, fmt, h, heading, problem, throttle } from "../lib.js";

const POLL_MS = 5000; // retries and slow receivers finish between events: look again now and then

function receiverState(state) {
  const tone = state === "Ready" ? "Ready" : state === "Failing" || state === "Misconfigured" ? "Failed" : state;
  return h("span", { "data-testid": "receiver-state", "data-state": state }, badge(tone, state || "—"));
}

function outcomeBadge(outcome) {
  const tone = outcome === "delivered" ? "delivered" : outcome === "failed" ? "failed" : outcome === "dropped" ? "Pending" : outcome;
  return h("span", { "data-testid": "delivery-outcome", "data-outcome": outcome }, badge(tone, outcome === "failed" ? "FAILED" : outcome));
}

function when(value) {
  return value ? h("time", { datetime: value, title: fmt.time(value) }, fmt.ago(value)) : h("span", { class: "muted" }, "never");
}

function text(value) {
  return value === null || value === undefined || value === "" ? h("span", { class: "muted" }, "—") : String(value);
}

function receivers(list) {
  if (!list.length) return h("p", { class: "muted empty" }, "No receiver: the fleet has no Alert document.");
  return h(
    "table",
    { "data-testid": "receivers" },
    h("caption", { class: "visually-hidden" }, "Receivers"),
    h(
      "thead",
      {},
      h("tr", {}, ["Alert", "Receiver", "State", "Delivered", "Failed", "Dropped", "Queued", "Last success", "Last failure", "Sends"].map((label, i) => h("th", { scope: "col", class: i >= 3 && i <= 6 ? "num" : undefined }, label))),
    ),
    h(
      "tbody",
      {},
      list.map((r) => {
        const failing = r.state && r.state !== "Ready";
        return [
          h(
            "tr",
            { "data-testid": "receiver-row", "data-alert": r.alert, class: failing ? "failed-row" : undefined },
            h("th", { scope: "row" }, r.alert),
            h("td", {}, h("span", {}, r.kind || "—"), r.target ? [h("br"), h("code", { class: "wrap" }, r.target)] : null),
            h("td", {}, receiverState(r.state), r.consecutiveFailures ? h("div", { class: "small" }, `${r.consecutiveFailures} failure${r.consecutiveFailures === 1 ? "" : "s"} in a row`) : null),
            h("td", { class: "num" }, String(r.delivered ?? 0)),
            h("td", { class: "num" }, r.failed ? h("strong", {}, String(r.failed)) : "0"),
            h("td", { class: "num" }, String(r.dropped ?? 0)),
            h("td", { class: "num" }, String(r.queued ?? 0)),
            h("td", {}, when(r.lastSuccessAt)),
            h("td", {}, when(r.lastFailureAt)),
            h("td", { class: "small" }, [r.severity ? `${r.severity} and above` : null, (r.eventTypes || []).length ? `; ${r.eventTypes.join(", ")}` : "; every event", (r.modules || []).length ? `; modules ${r.modules.join(", ")}` : ""].filter(Boolean).join("")),
          ),
          r.lastError && failing
            ? h("tr", { class: "failed-row detail-row" }, h("td", { colspan: "10" }, h("p", { class: "problem", "data-testid": "receiver-error" }, h("strong", {}, `${r.alert}: last error: `), r.lastError)))
            : null,
        ];
      }),
    ),
  );
}

function deliveries(list) {
  if (!list.length) return h("p", { class: "muted empty" }, "No delivery yet.");
  const rows = [...list].reverse();
  return h(
    "table",
    { "data-testid": "deliveries" },
    h("caption", { class: "visually-hidden" }, "Recent deliveries, newest first"),
    h("thead", {}, h("tr", {}, ["When", "Alert", "Receiver", "Notification", "Outcome", "Tries", "Error"].map((label, i) => h("th", { scope: "col", class: i === 5 ? "num" : undefined }, label)))),
    h(
      "tbody",
      {},
      rows.map((d) =>
        h(
          "tr",
          { "data-testid": "delivery-row", "data-outcome": d.outcome, "data-alert": d.alert, class: d.outcome === "failed" ? "failed-row" : undefined },
          h("td", { class: "nowrap" }, h("time", { datetime: d.at, title: fmt.time(d.at) }, fmt.time(d.at)), h("br"), h("span", { class: "muted small" }, fmt.ago(d.at))),
          h("td", {}, d.alert),
          h("td", {}, h("code", { class: "wrap" }, d.receiver)),
          h(
            "td",
            {},
            h("span", {}, d.type || "—"),
            d.severity ? h("span", { class: "muted" }, ` (${d.severity})`) : null,
            d.module ? [h("br"), h("a", { href: `#/modules/${encodeURIComponent(d.module)}` }, d.module)] : null,
            d.deploymentId ? [" · ", h("a", { href: `#/rollouts/${encodeURIComponent(d.deploymentId)}` }, "rollout")] : null,
          ),
          h("td", {}, outcomeBadge(d.outcome)),
          h("td", { class: "num" }, String(d.attempts ?? "—")),
          h("td", {}, d.error ? h("span", { class: "error-text" }, d.error) : text(null)),
        ),
      ),
    ),
  );
}

function scaling(list) {
  if (!list.length) return h("p", { class: "muted empty", "data-testid": "scaling-none" }, "No scaling signal is active.");
  return h(
    "table",
    { "data-testid": "scaling" },
    h("caption", { class: "visually-hidden" }, "Active scaling signals"),
    h("thead", {}, h("tr", {}, ["Region", "Signal", "Value", "Threshold", "Healthy nodes", "Since", "Message"].map((label, i) => h("th", { scope: "col", class: i >= 2 && i <= 4 ? "num" : undefined }, label)))),
    h(
      "tbody",
      {},
      list.map((s) =>
        h(
          "tr",
          { "data-testid": "scaling-row", "data-region": s.region },
          h("th", { scope: "row" }, s.region),
          h("td", {}, badge(s.direction === "up" ? "Pending" : "Unknown", s.direction === "up" ? "▲ add a node" : "▼ remove a node"), " ", h("span", { class: "muted" }, s.trigger)),
          h("td", { class: "num" }, String(s.value)),
          h("td", { class: "num" }, String(s.threshold)),
          h("td", { class: "num" }, String(s.nodes)),
          h("td", {}, when(s.since)),
          h("td", {}, s.message || "—"),
        ),
      ),
    ),
  );
}

export async function render(ctx) {
  const summary = h("div", { class: "cards", "data-testid": "notification-summary" });
  const receiverBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const deliveryBox = h("div", {});
  const scalingBox = h("div", {});
  const out = h("div", { class: "out" });
  const sections = [
    ["receivers", "Receivers", receiverBox],
    ["deliveries", "Recent deliveries", deliveryBox],
    ["scaling", "Scaling signals", scalingBox],
  ];
  fill(
    ctx.root,
    heading("Notifications"),
    h("p", { class: "muted" }, "Where the control plane sends rollout and fleet events (Alert documents), how those deliveries went, and the scaling signals it raises."),
    out,
    summary,
    sections.map(([id, title, box]) => [h("h2", { id }, title), box]),
  );

  const refresh = throttle(async () => {
    if (!ctx.current()) return;
    try {
      const data = (await api("/api/v1/wasm/notifications")) || {};
      if (!ctx.current()) return;
      fill(out);
      if (!("receivers" in data)) {
        fill(summary);
        fill(receiverBox, h("p", { class: "notice" }, "This control plane runs without a notifier: nothing is delivered."));
        fill(deliveryBox);
        fill(scalingBox);
        return;
      }
      const list = data.receivers || [];
      const sent = data.deliveries || [];
      const failing = data.failing || [];
      const failedRecent = sent.filter((d) => d.outcome === "failed").length;
      const card = (value, label, testid, bad) => h("div", { class: bad ? "card bad-card" : "card", "data-testid": testid }, h("div", { class: "value" }, String(value)), h("div", { class: "label" }, label));
      fill(
        summary,
        card(list.length, list.length === 1 ? "receiver" : "receivers", "count-receivers"),
        card(failing.length, failing.length ? `failing: ${failing.join(", ")}` : "receivers failing", "count-failing", failing.length > 0),
        card(data.published ?? 0, "notifications published", "count-published"),
        card(failedRecent, `failed of the last ${sent.length} deliveries`, "count-failed", failedRecent > 0),
        card((data.scaling || []).length, "scaling signals active", "count-scaling"),
      );
      fill(receiverBox, failing.length ? h("p", { class: "problem" }, `Failing: ${failing.join(", ")}. Their notifications are not arriving.`) : null, receivers(list));
      fill(deliveryBox, deliveries(sent));
      fill(scalingBox, scaling(data.scaling || []));
    } catch (error) {
      if (ctx.current()) fill(out, problem(error));
    }
  }, 0);

  refresh();
  ctx.on(["event", "pass"], throttle(refresh, 500));
  const timer = setInterval(() => {
    if (!ctx.current()) clearInterval(timer);
    else refresh();
  }, POLL_MS);
}
