// API keys: the table (keys masked to their last characters) and the
// create/edit form (CONTRACT 2 "API key"). A generated key is shown once,
// right after saving, with a copy button; the URL never carries it.

import { idOf, listApiKeys, listModels } from "./api.js";
import { announce, choice, field, h } from "./dom.js";
import {
  entityForm,
  formLayout,
  formPage,
  limitsFieldset,
  readLimits,
  saveOnSubmit,
  updatePreview,
} from "./forms.js";
import { entityTable } from "./listing.js";
import { preferKey } from "./playground.js";
import { formatLimits, generateKey, mask } from "./schema.js";

function modelList(names) {
  if (!names.length) return h("span", { class: "muted" }, "none (no access)");
  return h(
    "ul",
    { class: "tags" },
    names.map((n) => h("li", {}, n)),
  );
}

// -- the table ------------------------------------------------------------------

export function renderList(main, ctx) {
  entityTable(main, ctx, {
    segment: "apikeys",
    noun: "API key",
    title: "API keys",
    add: "Add API key",
    caption: "API keys",
    help: [
      "What clients send as ",
      h("code", {}, "Authorization: Bearer <key>"),
      ". Keys are shown by their last characters; rate-limit errors name the ID.",
    ],
    columns: ["Key", "ID", "Allowed models", "Limits"],
    fetch: listApiKeys,
    label: (entry) => mask(entry.value?.key) || idOf(entry),
    consequence: () => "Clients using this key get 401 Invalid API key from their next request on.",
    empty: "No API keys yet.",
    cells(entry) {
      const v = entry.value || {};
      const allowed = Array.isArray(v.allowed_models) ? v.allowed_models.map(String) : [];
      return [
        h("th", { scope: "row", "data-label": "Key" }, h("code", { class: "secret" }, mask(v.key))),
        h("td", { "data-label": "ID" }, h("code", { class: "id" }, idOf(entry))),
        h("td", { "data-label": "Allowed models" }, modelList(allowed)),
        h(
          "td",
          { "data-label": "Limits" },
          formatLimits(v.rate_limit) || h("span", { class: "muted" }, "none"),
        ),
      ];
    },
  });
}

// -- the form -------------------------------------------------------------------

export function renderForm(main, ctx) {
  formPage(main, ctx, {
    segment: "apikeys",
    noun: "API key",
    list: "API keys",
    label: (saved) => mask(saved.value?.key),
    needs: [listModels({ signal: ctx.signal })],
    build(saved, models) {
      const names = models.map((m) => String(m.value?.name ?? "")).filter(Boolean);
      return buildForm(main, saved, names, ctx);
    },
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

  const { form, submit } = entityForm(
    { id: "apikey-form", noun: "API key", segment: "apikeys", entry },
    h("fieldset", { id: "k-key-mode" }, h("legend", {}, "Key"), radios, typedField),
    modelsFieldset,
    limitsFieldset("k", v.rate_limit),
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
    // a field the form does not edit (issue 17's budget) is kept as it was
    if (v.budget !== undefined) doc.budget = v.budget;
    return { doc, problems };
  }
  const preview = () => {
    const how = mode();
    const shown =
      how === "generate" ? "<generated when saved>" : mask(how === "keep" ? savedKey : typed.value);
    updatePreview(collect(shown).doc);
  };
  saveOnSubmit(form, submit, {
    entry,
    segment: "apikeys",
    fieldFor,
    collect() {
      const how = mode();
      const key = how === "keep" ? savedKey : how === "generate" ? generateKey() : typed.value;
      return { ...collect(key), how, key };
    },
    blame: (text, { how }) => (/already exists/.test(text) && how === "type" ? [typed] : []),
    done(saved, { how, key }) {
      if (how === "generate") {
        showOnce(main, saved, key, Boolean(entry));
        return;
      }
      navigate("/ui/apikeys", { flash: `API key ${mask(key)} ${entry ? "saved" : "created"}.` });
    },
  });
  return formLayout(form, entry, "apikeys", preview);
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
