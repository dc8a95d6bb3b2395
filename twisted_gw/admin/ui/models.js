// Models: the table, and the create/edit form (CONTRACT 2 "Model").
// A provider key is never put back into the page after saving: the table and
// the form show its last 4 characters, and an empty key field on edit keeps it.

import { ApiError, adminCall, idOf, listModels } from "./api.js";
import { announce, confirmDialog, field, h } from "./dom.js";
import {
  clearErrors,
  errorPanel,
  limitsFieldset,
  previewPanel,
  readLimits,
  readNumber,
  showErrors,
  updatePreview,
} from "./forms.js";
import {
  BOUNDS,
  DEFAULT_BASES,
  PROVIDERS,
  family,
  formatLimits,
  isRemote,
  mask,
  splitModel,
} from "./schema.js";

function formatTimeout(ms) {
  if (!Number.isInteger(ms) || ms === 0) return "default";
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms.toLocaleString("en-US")} ms`;
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
      h("td", { "data-label": "Upstream model" }, h("code", {}, upstream)),
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
  const status = h("p", { class: "help" }, editing ? "Loading…" : "");
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
  if (!editing) {
    main.append(buildForm(null, navigate));
    return;
  }
  adminCall("GET", `/models/${encodeURIComponent(params.id)}`, undefined, { signal })
    .then((entry) => {
      if (signal.aborted) return;
      title.textContent = `Edit model ${entry.value?.name ?? ""}`;
      document.title = `${title.textContent} · twisted-gw admin`;
      status.textContent = `ID ${params.id}`;
      main.append(buildForm(entry, navigate));
    })
    .catch((err) => {
      if (err.name === "AbortError") return;
      status.replaceChildren(
        h("span", { class: "error", role: "alert" }, err.message),
        " ",
        h("a", { href: "/ui/models" }, "Back to models"),
      );
    });
}

function buildForm(entry, navigate) {
  const v = entry?.value || {};
  const [provider0, upstream0] = v.model ? splitModel(v.model) : [PROVIDERS[0], ""];
  const savedKey = v.provider_config?.api_key || "";

  const name = h("input", {
    id: "m-name",
    name: "name",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    value: v.name,
  });
  const provider = h(
    "select",
    { id: "m-provider", name: "provider" },
    PROVIDERS.map((p) => h("option", { value: p, selected: p === provider0 }, p)),
  );
  if (!PROVIDERS.includes(provider0))
    provider.prepend(h("option", { value: provider0, selected: true }, provider0));
  const upstream = h("input", {
    id: "m-upstream",
    name: "upstream",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    value: upstream0,
  });
  const apiKey = h("input", {
    id: "m-api-key",
    name: "api_key",
    type: "password",
    autocomplete: "new-password", // never autofilled with a saved (admin) password
    spellcheck: "false",
  });
  const apiBase = h("input", {
    id: "m-api-base",
    name: "api_base",
    type: "url",
    autocomplete: "off",
    spellcheck: "false",
    value: v.provider_config?.api_base,
  });
  const timeout = h("input", {
    id: "m-timeout",
    name: "timeout",
    type: "number",
    inputmode: "numeric",
    min: "0",
    max: String(BOUNDS.timeout_ms), // the Admin API refuses more (CONTRACT 5.5)
    step: "1",
    value: Number.isFinite(v.timeout) ? String(v.timeout) : undefined,
  });

  const providerField = field("Provider", provider, " ");
  const providerHelp = providerField.querySelector(".help");
  const keyHelp = savedKey
    ? `Saved key ${mask(savedKey)}. Leave empty to keep it.`
    : "Sent upstream by the gateway; never shown again after saving.";
  const baseField = field("API base URL (optional)", apiBase, " ");
  const baseHelpText = baseField.querySelector(".help");
  const remote = h(
    "fieldset",
    { id: "m-remote" },
    h("legend", {}, "Provider connection"),
    field(savedKey ? "Provider API key (new)" : "Provider API key", apiKey, keyHelp),
    baseField,
  );

  function providerChanged() {
    const p = provider.value;
    remote.hidden = !isRemote(p);
    remote.disabled = !isRemote(p);
    const base = DEFAULT_BASES[p];
    apiBase.placeholder = base || "";
    baseHelpText.textContent = base
      ? `Empty: ${base}. Any OpenAI-compatible server works for openai.`
      : "";
    upstream.placeholder = family(p)?.example_model || "";
    providerHelp.textContent = family(p)?.description || "";
  }
  provider.addEventListener("change", providerChanged);
  providerChanged();

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
    h(
      "div",
      { class: "row" },
      providerField,
      field("Upstream model", upstream, "Sent upstream as model; may contain /."),
    ),
    remote,
    field(
      "Timeout (ms)",
      timeout,
      "Wait for the upstream's answer (streams: first chunk, then between chunks). Empty or 0: the gateway's upstream_timeout.",
    ),
    limitsFieldset("m", v.rate_limit),
    h(
      "div",
      { class: "actions" },
      submit,
      h("a", { class: "button", href: "/ui/models" }, "Cancel"),
    ),
  );

  const fieldFor = (pointer) =>
    ({
      "/name": name,
      "/model": upstream,
      "/provider_config": isRemote(provider.value) ? apiKey : provider,
      "/provider_config/api_key": apiKey,
      "/provider_config/api_base": apiBase,
      "/timeout": timeout,
    })[pointer] ||
    (pointer.startsWith("/rate_limit/") ? document.getElementById(`m-${pointer.slice(12)}`) : null);

  // The document to send, and what cannot be sent (a number field that is not one).
  function collect() {
    const problems = [];
    const doc = { name: name.value.trim(), model: `${provider.value}/${upstream.value.trim()}` };
    if (isRemote(provider.value)) {
      const pc = {};
      const key = apiKey.value.trim() || savedKey;
      if (key) pc.api_key = key;
      if (apiBase.value.trim()) pc.api_base = apiBase.value.trim();
      doc.provider_config = pc;
    } else {
      doc.provider_config = {};
    }
    const t = readNumber(timeout, "Timeout");
    if (t.error) problems.push({ text: t.error, input: timeout });
    else if (t.value !== undefined) doc.timeout = t.value;
    const limits = readLimits("m", problems);
    if (limits) doc.rate_limit = limits;
    return { doc, problems };
  }
  const preview = () => {
    const { doc } = collect();
    if (doc.provider_config.api_key) {
      doc.provider_config = { ...doc.provider_config, api_key: mask(doc.provider_config.api_key) };
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
