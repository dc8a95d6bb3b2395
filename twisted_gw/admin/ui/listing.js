// The table view every entity shares (CONTRACT 3's list endpoints): a heading
// with its "Add" link, one row per stored entry with Edit and Delete. Delete
// asks first; when the Admin API refuses (a provider still referenced by
// models), its text is shown above the table as it came.

import { adminCall, idOf } from "./api.js";
import { announce, confirmDialog, h } from "./dom.js";

function messageRow(columns, text) {
  return h("tr", {}, h("td", { colspan: String(columns), class: "empty" }, text));
}

// spec: {segment ("models"), noun ("model"), title, add (its link's text),
// caption, help (nodes), columns (without Actions), fetch(options) -> entries,
// cells(entry) -> the row's cells, label(entry), consequence(label) (what
// deleting does), empty (the text of an empty table)}
export function entityTable(main, { signal }, spec) {
  const columns = [...spec.columns, "Actions"];
  const error = h("p", {
    class: "error",
    id: `${spec.segment}-error`,
    role: "alert",
    tabindex: "-1",
    hidden: true,
  });
  const tbody = h("tbody", {}, messageRow(columns.length, "Loading…"));
  const table = h(
    "table",
    { class: "data responsive", id: `${spec.segment}-table`, "aria-busy": "true" },
    h("caption", { class: "visually-hidden" }, spec.caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    tbody,
  );
  main.append(
    h(
      "div",
      { class: "view-head" },
      h("h1", { tabindex: "-1" }, spec.title),
      h("a", { class: "button primary", href: `/ui/${spec.segment}/create` }, spec.add),
    ),
    h("p", { class: "help" }, spec.help),
    error,
    h("div", { class: "table-wrap" }, table),
  );
  const noun = spec.noun[0].toUpperCase() + spec.noun.slice(1);

  async function remove(entry) {
    const label = spec.label(entry);
    const ok = await confirmDialog({
      title: `Delete ${spec.noun} ${label}?`,
      message: spec.consequence(label),
    });
    if (!ok) return;
    try {
      await adminCall("DELETE", `/${spec.segment}/${encodeURIComponent(idOf(entry))}`);
      announce(`${noun} ${label} deleted.`);
      load();
    } catch (err) {
      error.textContent = `Could not delete ${label}: ${err.message}`;
      error.hidden = false;
      error.focus();
    }
  }

  function row(entry) {
    const id = idOf(entry);
    const label = spec.label(entry);
    return h(
      "tr",
      { dataset: { id } },
      spec.cells(entry),
      h(
        "td",
        { "data-label": "Actions", class: "actions-cell" },
        h(
          "a",
          {
            class: "button small",
            href: `/ui/${spec.segment}/${encodeURIComponent(id)}/edit`,
            "aria-label": `Edit ${spec.noun} ${label}`,
          },
          "Edit",
        ),
        h(
          "button",
          {
            type: "button",
            class: "button small danger",
            "aria-label": `Delete ${spec.noun} ${label}`,
            onclick: () => remove(entry),
          },
          "Delete",
        ),
      ),
    );
  }

  async function load() {
    table.setAttribute("aria-busy", "true");
    try {
      const list = await spec.fetch({ signal });
      if (signal.aborted) return;
      error.hidden = true;
      tbody.replaceChildren(
        ...(list.length ? list.map(row) : [messageRow(columns.length, spec.empty)]),
      );
    } catch (err) {
      if (err.name === "AbortError") return;
      tbody.replaceChildren(messageRow(columns.length, "Not loaded."));
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      table.setAttribute("aria-busy", "false");
    }
  }
  load();
}
