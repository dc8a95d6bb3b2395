// Models: the table, and the create/edit form (CONTRACT 2 "Model").
// A provider key is never put back into the page after saving: the table and
// the form show its last 4 characters, and an empty key field on edit keeps it.

import { ApiError, adminCall, idOf, listModels } from "./api.js";
import { announce, confirmDialog, field, h } from "./dom.js";
import {
  clearErrors,
  errorPanel,
  limitsFieldset,
  numberInput,
  previewPanel,
  readLimits,
  readNumberInto,
  showErrors,
  updatePreview,
} from "./forms.js";
import { deploymentsPart, fallbacksPart, routingPart } from "./routing.js";
import { BOUNDS, formatLimits, loadRouting, mask, splitModel } from "./schema.js";
import { maskedConfig, upstreamFields } from "./upstream.js";

function formatTimeout(ms) {
  if (!Number.isInteger(ms) || ms === 0) return "default";
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms.toLocaleString("en-US")} ms`;
}

// "+2 targets · fallbacks a, b" for a model that routes (CONTRACT 5.1); "" otherwise
function routingSummary(v) {
  const parts = [];
  const targets = Array.isArray(v.targets) ? v.targets.length : 0;
  if (targets) parts.push(`+${targets} target${targets === 1 ? "" : "s"}`);
  if (Array.isArray(v.fallbacks) && v.fallbacks.length)
    parts.push(`fallbacks ${v.fallbacks.join(", ")}`);
  return parts.join(" · ");
}

function loadingRow(columns, text) {
  return h("tr", {}, h("td", { colspan: String(columns), class: "empty" }, text));
}

// -- the table ------------------------------------------------------------------

export function renderList(main, { signal }) {
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const tbody = h("tbody", {}, loadingRow(6, "Loading…"));
  const table = h(
    "table",
    { class: "data responsive", id: "models-table", "aria-busy": "true" },
    h("caption", { class: "visually-hidden" }, "Configured models"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Name", "Provider", "Upstream model", "Timeout", "Limits", "Actions"].map((c) =>
          h("th", { scope: "col" }, c),
        ),
      ),
    ),
    tbody,
  );
  main.append(
    h(
      "div",
      { class: "view-head" },
      h("h1", { tabindex: "-1" }, "Models"),
      h("a", { class: "button primary", href: "/ui/models/create" }, "Add model"),
    ),
    h(
      "p",
      { class: "help" },
      "What clients put in ",
      h("code", {}, "model"),
      ", and where the gateway sends it.",
    ),
    error,
    h("div", { class: "table-wrap" }, table),
  );

  async function remove(entry) {
    const name = entry.value?.name ?? idOf(entry);
    const ok = await confirmDialog({
      title: `Delete model ${name}?`,
      message: `Requests for “${name}” will get model_not_found at once. API keys that allow it keep the name.`,
    });
    if (!ok) return;
    try {
      await adminCall("DELETE", `/models/${encodeURIComponent(idOf(entry))}`);
      announce(`Model ${name} deleted.`);
      load();
    } catch (err) {
      error.textContent = `Could not delete ${name}: ${err.message}`;
      error.hidden = false;
      error.focus?.();
    }
  }

  function row(entry) {
    const v = entry.value || {};
    const [provider, upstream] = splitModel(v.model);
    const pc = v.provider_config || {};
    const details = [];
    if (pc.api_key) details.push(h("span", { class: "secret" }, `key ${mask(pc.api_key)}`));
    if (pc.api_base) details.push(h("span", { class: "base" }, pc.api_base));
    const id = idOf(entry);
    return h(
      "tr",
      { dataset: { id } },
      h("th", { scope: "row", "data-label": "Name" }, String(v.name ?? "")),
      h(
        "td",
        { "data-label": "Provider" },
        h("span", { class: "pill" }, provider),
        details.length ? h("div", { class: "sub" }, details) : null,
      ),
      h(
        "td",
        { "data-label": "Upstream model" },
        h("code", {}, upstream),
        routingSummary(v) ? h("div", { class: "sub" }, routingSummary(v)) : null,
      ),
      h("td", { "data-label": "Timeout" }, formatTimeout(v.timeout)),
      h(
        "td",
        { "data-label": "Limits" },
        formatLimits(v.rate_limit) || h("span", { class: "muted" }, "none"),
      ),
      h(
        "td",
        { "data-label": "Actions", class: "actions-cell" },
        h(
          "a",
          {
            class: "button small",
            href: `/ui/models/${encodeURIComponent(id)}/edit`,
            "aria-label": `Edit model ${v.name}`,
          },
          "Edit",
        ),
        h(
          "button",
          {
            type: "button",
            class: "button small danger",
            "aria-label": `Delete model ${v.name}`,
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
      const list = await listModels({ signal });
      if (signal.aborted) return;
      error.hidden = true;
      tbody.replaceChildren(
        ...(list.length ? list.map(row) : [loadingRow(6, "No models yet. Add one to start.")]),
      );
    } catch (err) {
      if (err.name === "AbortError") return;
      tbody.replaceChildren(loadingRow(6, "Not loaded."));
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      table.setAttribute("aria-busy", "false");
    }
  }
  load();
}

// -- the form -------------------------------------------------------------------

export function renderForm(main, { params, signal, navigate }) {
  const editing = params.id !== undefined;
  const title = h("h1", { tabindex: "-1" }, editing ? "Edit model" : "Add model");
  const status = h("p", { class: "help", "aria-busy": "true" }, "Loading…");
  main.append(
    h("div", { class: "view-head" }, title),
    h(
      "nav",
      { "aria-label": "Breadcrumb", class: "crumbs" },
      h("a", { href: "/ui/models" }, "Models"),
      " / ",
      editing ? "Edit" : "Add",
    ),
    status,
  );
  // the names a fallback is picked from; without them the form still keeps the saved ones
  const names = listModels({ signal })
    .then((list) => list.map((e) => e.value?.name).filter((n) => typeof n === "string"))
    .catch(() => []);
  const entry = editing
    ? adminCall("GET", `/models/${encodeURIComponent(params.id)}`, undefined, { signal })
    : Promise.resolve(null);
  Promise.all([entry, loadRouting(), names])
    .then(([saved, tables, modelNames]) => {
      if (signal.aborted) return;
      status.removeAttribute("aria-busy");
      status.textContent = editing ? `ID ${params.id}` : "";
      if (saved) {
        title.textContent = `Edit model ${saved.value?.name ?? ""}`;
        document.title = `${title.textContent} · twisted-gw admin`;
      }
      main.append(buildForm(saved, navigate, tables, modelNames.sort()));
    })
    .catch((err) => {
      if (err.name === "AbortError") return;
      status.removeAttribute("aria-busy");
      status.replaceChildren(
        h("span", { class: "error", role: "alert" }, err.message),
        " ",
        h("a", { href: "/ui/models" }, "Back to models"),
      );
    });
}

function buildForm(entry, navigate, tables, modelNames) {
  const v = entry?.value || {};

  const name = h("input", {
    id: "m-name",
    name: "name",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    value: v.name,
  });
  const own = upstreamFields("m", v);
  const timeout = numberInput("m-timeout", v.timeout, { max: BOUNDS.timeout_ms });
  // the parts of CONTRACT 5.1, folded away until a document uses them
  const parts = [
    deploymentsPart(v, tables),
    routingPart(v, tables),
    fallbacksPart(v, tables, modelNames, name),
  ];
  const routed = ["weight", "targets", "routing", "fallbacks"].some((k) => k in v);

  const submit = h(
    "button",
    { type: "submit", class: "button primary" },
    entry ? "Save changes" : "Create model",
  );
  const form = h(
    "form",
    {
      id: "model-form",
      class: "entity-form",
      novalidate: true,
      "aria-label": entry ? "Edit model" : "Add model",
    },
    field("Name", name, "Unique; what clients send as model."),
    own.nodes,
    field(
      "Timeout (ms)",
      timeout,
      "Wait for the upstream's answer (streams: first chunk, then between chunks). Empty or 0: the gateway's upstream_timeout.",
    ),
    limitsFieldset("m", v.rate_limit),
    h(
      "details",
      { class: "routing", id: "m-routing-section", open: routed },
      h("summary", {}, "Deployments, retries and fallbacks"),
      parts.map((part) => part.node),
    ),
    h(
      "div",
      { class: "actions" },
      submit,
      h("a", { class: "button", href: "/ui/models" }, "Cancel"),
    ),
  );

  const fieldFor = (pointer) =>
    ({ "/name": name, "/timeout": timeout })[pointer] ||
    own.fieldFor(pointer) ||
    (pointer.startsWith("/rate_limit/")
      ? document.getElementById(`m-${pointer.slice(12)}`)
      : null) ||
    parts.map((part) => part.fieldFor(pointer)).find(Boolean) ||
    null;

  // The document to send, and what cannot be sent (a number field that is not one).
  function collect() {
    const problems = [];
    const doc = { name: name.value.trim(), ...own.read() };
    readNumberInto(doc, "timeout", timeout, "Timeout", problems);
    const limits = readLimits("m", problems);
    if (limits) doc.rate_limit = limits;
    for (const part of parts) part.read(doc, problems);
    return { doc, problems };
  }
  const preview = () => {
    const { doc } = collect();
    doc.provider_config = maskedConfig(doc.provider_config);
    if (doc.targets) {
      doc.targets = doc.targets.map((t) => ({
        ...t,
        provider_config: maskedConfig(t.provider_config),
      }));
    }
    updatePreview(doc);
  };
  form.addEventListener("input", preview);
  form.addEventListener("change", preview);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const { doc, problems } = collect();
    if (problems.length) {
      showErrors(
        form,
        problems.map((p) => p.text).join("\n"),
        () => null,
        problems.map((p) => p.input),
      );
      return;
    }
    submit.disabled = true;
    try {
      const saved = entry
        ? await adminCall("PUT", `/models/${encodeURIComponent(idOf(entry))}`, doc)
        : await adminCall("POST", "/models", doc);
      navigate("/ui/models", {
        flash: `Model ${saved.value?.name ?? doc.name} ${entry ? "saved" : "created"}.`,
      });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      const text =
        err instanceof ApiError && err.status ? `${err.message}` : String(err.message || err);
      const pointerless = /already exists/.test(text) ? [name] : [];
      showErrors(form, text, fieldFor, pointerless);
    } finally {
      submit.disabled = false;
    }
  });

  const path = entry ? `/models/${idOf(entry)}` : "/models";
  const layout = h(
    "div",
    { class: "form-layout" },
    form,
    h("aside", { class: "form-side" }, errorPanel(), previewPanel(entry ? "PUT" : "POST", path)),
  );
  queueMicrotask(preview); // once the form is in the page
  return layout;
}
