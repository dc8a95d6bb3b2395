// Spend: what each API key and each model cost over the last day, week or
// month, from the request ledger (GET /aisix/admin/spend, issue 17), with
// each key's budget when it has one, and a bar chart drawn as inline SVG
// (no chart library: nothing is loaded from anywhere but the gateway).

import { ApiError, adminCall, idOf, listApiKeys } from "./api.js";
import { formatNumber, h } from "./dom.js";

export const RANGES = [
  ["day", "Last day", 86400],
  ["week", "Last 7 days", 7 * 86400],
  ["month", "Last 30 days", 30 * 86400],
];

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  for (const child of children) el.append(child instanceof Node ? child : String(child));
  return el;
}

export function formatUsd(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  return `$${n.toFixed(n !== 0 && Math.abs(n) < 1 ? 4 : 2)}`;
}

// Horizontal bars, one per row: its label, a bar as long as its share of
// the largest value, and the value as text. Cost when any row is priced,
// else requests.
export function barChart(id, title, rows) {
  const priced = rows.some((r) => r.cost_usd !== null);
  const value = (r) => (priced ? r.cost_usd || 0 : r.requests);
  const shown = rows.slice(0, 12);
  const max = Math.max(...shown.map(value), 0) || 1;
  const rowHeight = 26;
  const labelWidth = 190;
  const barWidth = 420;
  const width = labelWidth + barWidth + 110;
  const height = shown.length * rowHeight + 8;
  const label = `${title}: ${priced ? "cost in USD" : "requests"}`;
  const chart = svg("svg", {
    id,
    class: "bars",
    role: "img",
    "aria-label": label,
    viewBox: `0 0 ${width} ${height}`,
    width: "100%",
    preserveAspectRatio: "xMinYMin meet",
  });
  chart.append(svg("title", {}, label));
  shown.forEach((r, i) => {
    const y = i * rowHeight + 4;
    const name = r.id === null ? "(no model)" : String(r.id);
    const length = Math.max(1, Math.round((value(r) / max) * barWidth));
    chart.append(
      svg(
        "g",
        { class: "bar", "data-id": name },
        svg(
          "text",
          { x: labelWidth - 8, y: y + 16, "text-anchor": "end", class: "bar-label" },
          name.length > 28 ? `${name.slice(0, 27)}…` : name,
        ),
        svg("rect", { x: labelWidth, y, width: length, height: rowHeight - 8, rx: 3 }),
        svg(
          "text",
          { x: labelWidth + length + 6, y: y + 16, class: "bar-value" },
          priced ? formatUsd(r.cost_usd) : formatNumber(r.requests),
        ),
      ),
    );
  });
  return chart;
}

function table(caption, headers, rows, textColumns = 1) {
  const kind = (i) => (i < textColumns ? "" : "num");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data" },
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((x, i) => h("th", { scope: "col", class: kind(i) }, x)))),
      h(
        "tbody",
        {},
        rows.map((cells) =>
          h("tr", {}, cells.map((c, i) => h("td", { "data-label": headers[i], class: kind(i) }, c))),
        ),
      ),
    ),
  );
}

export function budgetText(budget, spent) {
  const max = budget && typeof budget.max_usd === "number" ? budget.max_usd : null;
  if (max === null) return "no budget";
  const used = max > 0 && spent !== null ? ` (${Math.round((spent / max) * 100)}% used)` : "";
  return `${formatUsd(max)}${used}`;
}

function section(id, title, chart, body, empty) {
  return h(
    "section",
    { id, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title),
    body ? [chart, body] : h("p", { class: "empty" }, empty),
  );
}

function renderReport(target, byKey, byModel, budgets) {
  const keyRows = byKey.rows.map((r) => [
    h("code", {}, r.id),
    formatNumber(r.requests),
    formatNumber(r.prompt_tokens),
    formatNumber(r.completion_tokens),
    formatUsd(r.cost_usd),
    h("span", { class: "budget" }, budgetText(budgets.get(r.id), r.cost_usd)),
  ]);
  const modelRows = byModel.rows.map((r) => [
    r.id === null ? h("span", { class: "muted" }, "(no model)") : r.id,
    formatNumber(r.requests),
    formatNumber(r.prompt_tokens),
    formatNumber(r.completion_tokens),
    formatUsd(r.cost_usd),
  ]);
  const numbers = ["Requests", "Prompt tokens", "Completion tokens", "Cost"];
  target.replaceChildren(
    section(
      "spend-keys",
      "By API key",
      barChart("spend-keys-chart", "Spend by API key", byKey.rows),
      keyRows.length ? table("Spend by API key", ["API key", ...numbers, "Budget"], keyRows) : null,
      "No requests in this period.",
    ),
    section(
      "spend-models",
      "By model",
      barChart("spend-models-chart", "Spend by model", byModel.rows),
      modelRows.length ? table("Spend by model", ["Model", ...numbers], modelRows) : null,
      "No requests in this period.",
    ),
  );
}

export function render(main, { signal }) {
  const range = h(
    "select",
    { id: "spend-range", name: "spend-range" },
    RANGES.map(([value, label]) => h("option", { value }, label)),
  );
  range.value = "week";
  const period = h("p", { class: "help", id: "spend-period" });
  const error = h("p", { class: "error", role: "alert", hidden: true, id: "spend-error" });
  const body = h("div", { id: "spend-body" }, h("p", { class: "muted" }, "loading…"));
  main.append(
    h(
      "div",
      { class: "view-head" },
      h("h1", { tabindex: "-1" }, "Spend"),
      h(
        "p",
        { class: "help" },
        "From the request ledger (",
        h("code", {}, "GET /aisix/admin/spend"),
        "): every request past authentication. The last second's requests may not be counted yet.",
      ),
    ),
    h(
      "div",
      { class: "field spend-range" },
      h("label", { for: "spend-range" }, "Period"),
      range,
    ),
    period,
    error,
    body,
  );

  let generation = 0;
  async function load() {
    const mine = ++generation;
    const seconds = RANGES.find(([value]) => value === range.value)[2];
    const to = new Date();
    const from = new Date(to.getTime() - seconds * 1000);
    const query = `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`;
    try {
      const [byKey, byModel, keys] = await Promise.all([
        adminCall("GET", `/spend?group_by=key&${query}`, undefined, { signal }),
        adminCall("GET", `/spend?group_by=model&${query}`, undefined, { signal }),
        listApiKeys({ signal }),
      ]);
      if (mine !== generation) return;
      const budgets = new Map(keys.map((entry) => [idOf(entry), entry.value?.budget]));
      period.textContent = `${byKey.from} to ${byKey.to} (UTC).`;
      renderReport(body, byKey, byModel, budgets);
      error.hidden = true;
    } catch (err) {
      if (err.name === "AbortError" || mine !== generation) return;
      error.textContent = err instanceof ApiError ? err.message : String(err);
      error.hidden = false;
    }
  }
  range.addEventListener("change", load);
  load();
}
