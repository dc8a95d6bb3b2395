// API keys: the table (keys masked to their last 4 characters) and the
// create/edit form (CONTRACT 2 "API key"). A generated key is shown once,
// right after saving, with a copy button; the URL never carries it.

import { ApiError, adminCall, idOf, listApiKeys, listModels } from "./api.js";
import { announce, choice, confirmDialog, field, h } from "./dom.js";
import {
  clearErrors,
  errorPanel,
  limitsFieldset,
  previewPanel,
  readLimits,
  showErrors,
  updatePreview,
} from "./forms.js";
import { preferKey } from "./playground.js";
import { formatLimits, generateKey, mask } from "./schema.js";

function messageRow(text) {
  return h("tr", {}, h("td", { colspan: "5", class: "empty" }, text));
}

function modelList(names) {
  if (!names.length) return h("span", { class: "muted" }, "none (no access)");
  return h(
    "ul",
    { class: "tags" },
    names.map((n) => h("li", {}, n)),
  );
}

// -- the table ------------------------------------------------------------------

export function renderList(main, { signal }) {
  const error = h("p", { class: "error", role: "alert", tabindex: "-1", hidden: true });
  const tbody = h("tbody", {}, messageRow("Loading…"));
  const table = h(
    "table",
    { class: "data responsive", id: "apikeys-table", "aria-busy": "true" },
    h("caption", { class: "visually-hidden" }, "API keys"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Key", "ID", "Allowed models", "Limits", "Actions"].map((c) =>
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
      h("h1", { tabindex: "-1" }, "API keys"),
      h("a", { class: "button primary", href: "/ui/apikeys/create" }, "Add API key"),
    ),
    h(
      "p",
      { class: "help" },
      "What clients send as ",
      h("code", {}, "Authorization: Bearer <key>"),
      ". Keys are shown by their last 4 characters; rate-limit errors name the ID.",
    ),
    error,
    h("div", { class: "table-wrap" }, table),
  );

  async function remove(entry) {
    const label = mask(entry.value?.key) || idOf(entry);
    const ok = await confirmDialog({
      title: `Delete API key ${label}?`,
      message: "Clients using this key get 401 Invalid API key from their next request on.",
    });
    if (!ok) return;
    try {
      await adminCall("DELETE", `/apikeys/${encodeURIComponent(idOf(entry))}`);
      announce(`API key ${label} deleted.`);
      load();
    } catch (err) {
      error.textContent = `Could not delete ${label}: ${err.message}`;
      error.hidden = false;
      error.focus();
    }
  }

  function row(entry) {
    const v = entry.value || {};
    const id = idOf(entry);
    const label = mask(v.key);
    const allowed = Array.isArray(v.allowed_models) ? v.allowed_models.map(String) : [];
    return h(
      "tr",
      { dataset: { id } },
      h("th", { scope: "row", "data-label": "Key" }, h("code", { class: "secret" }, label)),
      h("td", { "data-label": "ID" }, h("code", { class: "id" }, id)),
      h("td", { "data-label": "Allowed models" }, modelList(allowed)),
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
            href: `/ui/apikeys/${encodeURIComponent(id)}/edit`,
            "aria-label": `Edit API key ${label}`,
          },
          "Edit",
        ),
        h(
          "button",
          {
            type: "button",
            class: "button small danger",
            "aria-label": `Delete API key ${label}`,
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
      const list = await listApiKeys({ signal });
      if (signal.aborted) return;
      error.hidden = true;
      tbody.replaceChildren(...(list.length ? list.map(row) : [messageRow("No API keys yet.")]));
    } catch (err) {
      if (err.name === "AbortError") return;
      tbody.replaceChildren(messageRow("Not loaded."));
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      table.setAttribute("aria-busy", "false");
    }
  }
  load();
}

// -- the form -------------------------------------------------------------------

export function renderForm(main, ctx) {
  const { params, signal } = ctx;
  const editing = params.id !== undefined;
  const title = h("h1", { tabindex: "-1" }, editing ? "Edit API key" : "Add API key");
  const status = h("p", { class: "help" }, "Loading…");
  main.append(
    h("div", { class: "view-head" }, title),
    h(
      "nav",
      { "aria-label": "Breadcrumb", class: "crumbs" },
      h("a", { href: "/ui/apikeys" }, "API keys"),
      " / ",
      editing ? "Edit" : "Add",
    ),
    status,
  );
  const entry = editing
    ? adminCall("GET", `/apikeys/${encodeURIComponent(params.id)}`, undefined, { signal })
    : Promise.resolve(null);
  Promise.all([entry, listModels({ signal })])
    .then(([current, models]) => {
      if (signal.aborted) return;
      if (current) {
        title.textContent = `Edit API key ${mask(current.value?.key)}`;
        document.title = `${title.textContent} · twisted-gw admin`;
        status.textContent = `ID ${params.id}`;
      } else {
        status.textContent = "";
      }
      const names = models.map((m) => String(m.value?.name ?? "")).filter(Boolean);
      main.append(buildForm(main, current, names, ctx));
    })
    .catch((err) => {
      if (err.name === "AbortError") return;
      status.replaceChildren(
        h("span", { class: "error", role: "alert" }, err.message),
        " ",
        h("a", { href: "/ui/apikeys" }, "Back to API keys"),
      );
    });
}

function buildForm(main, entry, modelNames, { navigate }) {
  const v = entry?.value || {};
  const savedKey = typeof v.key === "string" ? v.key : "";
  const allowed = new Set(Array.isArray(v.allowed_models) ? v.allowed_models.map(String) : []);

  // -- the key: keep (edit only), generate, or type
  const choices = [];
  if (entry) choices.push(["keep", `Keep the current key (${mask(savedKey)})`]);
  choices.push(["generate", "Generate a random key (256 bits, shown once after saving)"]);
  choices.push(["type", "Type a key"]);
  const typed = h("input", {
    id: "k-key",
    name: "key",
    type: "text",
    autocomplete: "off",
    spellcheck: "false",
    class: "mono",
  });
  const typedField = field("Key", typed, "Any string unique among the API keys.");
  const radios = choices.map(([value, label], i) =>
    choice(
      h("input", {
        type: "radio",
        name: "key-mode",
        id: `k-mode-${value}`,
        value,
        checked: i === 0,
        onchange: modeChanged,
      }),
      label,
    ),
  );
  function mode() {
    return (
      radios.map((r) => r.querySelector("input")).find((r) => r.checked)?.value || choices[0][0]
    );
  }
  function modeChanged() {
    typedField.hidden = mode() !== "type";
    if (mode() === "type") typed.focus();
  }
  typedField.hidden = true;

  // -- allowed models: the existing ones, plus names the key has that no model has now
  const names = [...new Set([...modelNames, ...allowed])].sort();
  const boxes = names.map((name, i) => {
    const known = modelNames.includes(name);
    return choice(
      h("input", {
        type: "checkbox",
        id: `k-model-${i}`,
        name: "allowed_models",
        value: name,
        checked: allowed.has(name),
      }),
      [name, known ? null : h("span", { class: "muted" }, " (no such model)")],
    );
  });
  const setAll = (checked) => {
    for (const box of main.querySelectorAll('input[name="allowed_models"]')) box.checked = checked;
    preview();
  };
  const modelsFieldset = h(
    "fieldset",
    { id: "k-models" },
    h("legend", {}, "Allowed models"),
    names.length
      ? [
          h("div", { class: "choice-grid" }, boxes),
          h(
            "div",
            { class: "inline-actions" },
            h(
              "button",
              { type: "button", class: "button small", onclick: () => setAll(true) },
              "Select all",
            ),
            h(
              "button",
              { type: "button", class: "button small", onclick: () => setAll(false) },
              "Select none",
            ),
          ),
        ]
      : h(
          "p",
          { class: "help" },
          "No models yet: this key will have no access until you allow some.",
        ),
    h("p", { class: "help" }, "None selected means no access."),
  );

  const submit = h(
    "button",
    { type: "submit", class: "button primary" },
    entry ? "Save changes" : "Create API key",
  );
  const form = h(
    "form",
    {
      id: "apikey-form",
      class: "entity-form",
      novalidate: true,
      "aria-label": entry ? "Edit API key" : "Add API key",
    },
    h("fieldset", { id: "k-key-mode" }, h("legend", {}, "Key"), radios, typedField),
    modelsFieldset,
    limitsFieldset("k", v.rate_limit),
    h(
      "div",
      { class: "actions" },
      submit,
      h("a", { class: "button", href: "/ui/apikeys" }, "Cancel"),
    ),
  );

  const fieldFor = (pointer) =>
    pointer === "/key"
      ? typed
      : pointer.startsWith("/allowed_models")
        ? main.querySelector('input[name="allowed_models"]')
        : pointer.startsWith("/rate_limit/")
          ? document.getElementById(`k-${pointer.slice(12)}`)
          : null;

  function collect(key) {
    const problems = [];
    const doc = {
      key,
      allowed_models: [...form.querySelectorAll('input[name="allowed_models"]:checked')].map(
        (b) => b.value,
      ),
    };
    const limits = readLimits("k", problems);
    if (limits) doc.rate_limit = limits;
    return { doc, problems };
  }
  const preview = () => {
    const how = mode();
    const shown =
      how === "generate" ? "<generated when saved>" : mask(how === "keep" ? savedKey : typed.value);
    updatePreview(collect(shown).doc);
  };
  form.addEventListener("input", preview);
  form.addEventListener("change", preview);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const how = mode();
    const key = how === "keep" ? savedKey : how === "generate" ? generateKey() : typed.value;
    const { doc, problems } = collect(key);
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
        ? await adminCall("PUT", `/apikeys/${encodeURIComponent(idOf(entry))}`, doc)
        : await adminCall("POST", "/apikeys", doc);
      if (how === "generate") {
        showOnce(main, saved, key, Boolean(entry));
      } else {
        navigate("/ui/apikeys", { flash: `API key ${mask(key)} ${entry ? "saved" : "created"}.` });
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      const pointerless = /already exists/.test(err.message) && how === "type" ? [typed] : [];
      showErrors(form, err.message, fieldFor, pointerless);
    } finally {
      submit.disabled = false;
    }
  });

  const path = entry ? `/apikeys/${idOf(entry)}` : "/apikeys";
  const layout = h(
    "div",
    { class: "form-layout" },
    form,
    h("aside", { class: "form-side" }, errorPanel(), previewPanel(entry ? "PUT" : "POST", path)),
  );
  queueMicrotask(preview);
  return layout;
}

// The new key, once. The page moves to /ui/apikeys (so a reload shows the
// list, not this) without rendering the list until "Done".
function showOnce(main, saved, key, replaced) {
  history.replaceState(null, "", "/ui/apikeys");
  const copyStatus = h("p", { id: "copy-status", role: "status", class: "help" });
  const value = h("input", {
    id: "new-key",
    type: "text",
    readonly: true,
    value: key,
    class: "mono",
    spellcheck: "false",
    "aria-describedby": "new-key-help",
    onfocus: (e) => e.target.select(),
  });
  async function copy() {
    try {
      await navigator.clipboard.writeText(key);
    } catch {
      // no clipboard API (plain http on another host): select and copy the old way
      value.focus();
      value.select();
      if (!document.execCommand("copy")) {
        copyStatus.textContent = "Copy failed: the key is selected, press Ctrl+C (⌘C).";
        return;
      }
    }
    copyStatus.textContent = "Copied to the clipboard.";
  }
  const heading = h("h1", { tabindex: "-1" }, replaced ? "API key replaced" : "API key created");
  main.replaceChildren(
    h("div", { class: "view-head" }, heading),
    h(
      "section",
      { class: "card once", "aria-labelledby": "new-key-label" },
      h("label", { id: "new-key-label", for: "new-key" }, "The new API key"),
      h(
        "p",
        { class: "help", id: "new-key-help" },
        "Copy it now: this page shows it once. From now on it is listed as ",
        h("code", {}, mask(key)),
        ` (ID ${idOf(saved)}).`,
      ),
      h(
        "div",
        { class: "copy-row" },
        value,
        h(
          "button",
          { type: "button", class: "button primary", id: "copy-key", onclick: copy },
          "Copy",
        ),
      ),
      copyStatus,
      h(
        "div",
        { class: "actions" },
        h("a", { class: "button", href: "/ui/apikeys", id: "key-done" }, "Done"),
        h(
          "a",
          { class: "button", href: "/ui/playground", onclick: () => preferKey(idOf(saved)) },
          "Try it in the playground",
        ),
      ),
    ),
  );
  document.title = `${heading.textContent} · twisted-gw admin`;
  heading.focus();
  announce(`${heading.textContent}. Copy it now: it is shown once.`);
}
