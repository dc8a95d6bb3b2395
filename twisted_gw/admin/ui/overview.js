// Overview: requests, tokens and error rate since the gateway started, and
// the upstream attempts and cooldowns per model and deployment (CONTRACT
// 5.1), read from GET /metrics and refreshed every few seconds while the view
// is open.

import { ApiError, fetchMetrics, listApiKeys, listModels, listProviders } from "./api.js";
import { formatNumber, h } from "./dom.js";
import { parsePrometheus, summarize } from "./metrics.js";

export const REFRESH_MS = 5000;

function stat(id, label, value, detail) {
  return h(
    "div",
    { class: "stat", id },
    h("h2", { class: "stat-label" }, label),
    h("p", { class: "stat-value" }, value),
    h("p", { class: "stat-detail" }, detail),
  );
}

function percent(rate) {
  if (rate === null) return "–";
  const p = rate * 100;
  return `${p < 10 && p > 0 ? p.toFixed(1) : Math.round(p)}%`;
}

// The first `textColumns` columns are text, the others numbers (right-aligned).
function table(caption, headers, rows, empty, textColumns = 1) {
  const kind = (i) => (i < textColumns ? "" : "num");
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data" },
      h("caption", { class: "visually-hidden" }, caption),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          headers.map((x, i) => h("th", { scope: "col", class: kind(i) }, x)),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((cells) =>
          h(
            "tr",
            {},
            cells.map((c, i) => h("td", { "data-label": headers[i], class: kind(i) }, c)),
          ),
        ),
      ),
    ),
  );
}

function renderSummary(target, s) {
  const stats = h(
    "div",
    { class: "stats" },
    stat("stat-requests", "Requests", formatNumber(s.requests), "proxy and playground"),
    stat(
      "stat-tokens",
      "Tokens",
      formatNumber(s.tokens.total),
      `${formatNumber(s.tokens.prompt)} prompt · ${formatNumber(s.tokens.completion)} completion`,
    ),
    stat(
      "stat-errors",
      "Error rate",
      percent(s.errorRate),
      `${formatNumber(s.clientErrors)} 4xx · ${formatNumber(s.serverErrors)} 5xx`,
    ),
    stat(
      "stat-latency",
      "Mean latency",
      s.meanLatencyMs === null ? "–" : `${formatNumber(s.meanLatencyMs)} ms`,
      "request to last byte",
    ),
  );
  const statuses = [...s.byStatus.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([status, n]) => [status, formatNumber(n)]);
  const models = [...s.tokensByModel.entries()]
    .sort(([, a], [, b]) => b.total - a.total)
    .map(([model, t]) => [
      model,
      formatNumber(t.prompt),
      formatNumber(t.completion),
      formatNumber(t.total),
    ]);
  const deployments = s.deployments.map((d) => [
    d.model,
    h("code", {}, d.target),
    formatNumber(d.ok),
    formatNumber(d.failed),
    d.failures.size
      ? h(
          "ul",
          { class: "outcomes" },
          [...d.failures.entries()]
            .sort(([, a], [, b]) => b - a)
            .map(([outcome, n]) => h("li", {}, `${outcome} ${formatNumber(n)}`)),
        )
      : "–",
    formatNumber(d.cooldowns),
  ]);
  const ends = [...s.streamEnds.entries()]
    .filter(([, n]) => n > 0)
    .map(([end, n]) => [end, formatNumber(n)]);
  target.replaceChildren(
    stats,
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { "aria-labelledby": "by-status" },
        h("h2", { id: "by-status" }, "Responses by status"),
        table("Responses by HTTP status", ["Status", "Responses"], statuses, "No requests yet."),
      ),
      h(
        "section",
        { "aria-labelledby": "by-model" },
        h("h2", { id: "by-model" }, "Tokens by model"),
        table(
          "Tokens by model",
          ["Model", "Prompt", "Completion", "Total"],
          models,
          "No tokens yet.",
        ),
      ),
      ends.length
        ? h(
            "section",
            { "aria-labelledby": "by-end" },
            h("h2", { id: "by-end" }, "How streams ended"),
            table("Streams by how they ended", ["End", "Streams"], ends, ""),
          )
        : null,
    ),
    h(
      "section",
      { "aria-labelledby": "by-deployment", id: "overview-deployments" },
      h("h2", { id: "by-deployment" }, "Deployments"),
      h(
        "p",
        { class: "help" },
        "Upstream attempts per model and deployment: ",
        h("code", {}, "0"),
        " is the model's own upstream, ",
        h("code", {}, "n"),
        " its target n, ",
        h("code", {}, "name#n"),
        " deployment n of the fallback name.",
      ),
      table(
        "Upstream attempts and cooldowns by model and deployment",
        ["Model", "Target", "OK", "Failed", "Failures by outcome", "Cooldowns"],
        deployments,
        "No routed requests yet.",
        2,
      ),
    ),
  );
}

export function render(main, { signal }) {
  const updated = h("span", { id: "overview-updated" }, "loading…");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const body = h("div", { id: "overview-body", "aria-live": "off" });
  const config = h("p", { class: "help", id: "overview-config" });
  main.append(
    h(
      "div",
      { class: "view-head" },
      h("h1", { tabindex: "-1" }, "Overview"),
      h(
        "p",
        { class: "help" },
        "Since the gateway started, from ",
        h("a", { href: "/metrics" }, "/metrics"),
        ". Updated ",
        updated,
        `, every ${REFRESH_MS / 1000} s.`,
      ),
    ),
    error,
    body,
    config,
  );

  let timer = null;
  async function refresh() {
    timer = null;
    if (signal.aborted) return;
    if (!document.hidden) {
      try {
        const text = await fetchMetrics({ signal });
        renderSummary(body, summarize(parsePrometheus(text)));
        updated.textContent = new Date().toLocaleTimeString("en-GB");
        error.hidden = true;
      } catch (err) {
        if (err.name === "AbortError") return;
        error.textContent = err instanceof ApiError ? err.message : String(err);
        error.hidden = false;
      }
    }
    if (!signal.aborted) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();

  const count = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;
  Promise.all([listModels({ signal }), listProviders({ signal }), listApiKeys({ signal })])
    .then(([models, providers, keys]) => {
      config.replaceChildren(
        "Configured: ",
        h("a", { href: "/ui/models" }, count(models.length, "model")),
        ", ",
        h("a", { href: "/ui/providers" }, count(providers.length, "provider")),
        ", ",
        h("a", { href: "/ui/apikeys" }, count(keys.length, "API key")),
        ".",
      );
    })
    .catch(() => {}); // a refused admin key is handled by the app; the numbers above still load

  return () => {
    if (timer !== null) clearTimeout(timer);
  };
}
