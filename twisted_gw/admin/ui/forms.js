// Pieces shared by the entity forms (models, providers, API keys): the form's
// page and its layout, saving, number inputs for limits, write-only secrets,
// the error panel beside the form, and pointing the server's errors at fields.

import { ApiError, adminCall, idOf } from "./api.js";
import { describe, field, h, undescribe } from "./dom.js";
import { schemaSentences } from "./errors.js";
import { BOUNDS, LIMIT_FIELDS, LIMIT_LABELS, errorPointers, mask } from "./schema.js";

export const ERROR_ID = "form-error";

// An integer input: type=number, but the server decides what is valid. Its
// bounds are the Admin API's (CONTRACT 5.5), a rate limit's unless given; an
// unknown maximum is left out.
export function numberInput(id, value, { min = 0, max = BOUNDS.rate_limit } = {}) {
  return h("input", {
    id,
    name: id,
    type: "number",
    inputmode: "numeric",
    min: String(min),
    max: Number.isFinite(max) ? String(max) : undefined,
    step: "1",
    value: Number.isFinite(value) ? String(value) : undefined,
  });
}

// The rate-limit fieldset (CONTRACT 2: an integer >= 0 per kind of the catalog).
export function limitsFieldset(prefix, limits) {
  const current = limits && typeof limits === "object" ? limits : {};
  return h(
    "fieldset",
    { class: "limits" },
    h("legend", {}, "Rate limits"),
    h(
      "p",
      { class: "help", id: `${prefix}-limits-help` },
      "Whole numbers. Empty means no limit of that kind.",
    ),
    h(
      "div",
      { class: "limit-grid" },
      LIMIT_FIELDS.map((k) => {
        const input = numberInput(`${prefix}-${k}`, current[k]);
        describe(input, `${prefix}-limits-help`);
        return field(`${LIMIT_LABELS[k]} (${k})`, input);
      }),
    ),
  );
}

// A number input's value: undefined when empty, the number typed otherwise
// (sent as typed, so the Admin API judges 1.5 or -1), or an error text.
export function readNumber(input, label) {
  if (input.validity.badInput) return { error: `${label}: not a number.` };
  const text = input.value.trim();
  if (text === "") return { value: undefined };
  return { value: Number(text) };
}

// Put a number input's value at `doc[key]` (nothing when it is empty); one
// that is not a number goes to `problems` as {text, input} instead.
export function readNumberInto(doc, key, input, label, problems) {
  const { value, error } = readNumber(input, label);
  if (error) problems.push({ text: error, input });
  else if (value !== undefined) doc[key] = value;
}

export function readLimits(prefix, errors) {
  const limits = {};
  for (const k of LIMIT_FIELDS) {
    const input = document.getElementById(`${prefix}-${k}`);
    readNumberInto(limits, k, input, `${LIMIT_LABELS[k]} (${k})`, errors);
  }
  return Object.keys(limits).length ? limits : undefined;
}

// What the form will send, secrets masked, updated as the operator types.
export function previewPanel(method, path) {
  return h(
    "section",
    { class: "preview", "aria-labelledby": "preview-title" },
    h("h2", { id: "preview-title" }, "Request"),
    h("p", { class: "help" }, h("code", {}, `${method} /aisix/admin${path}`)),
    h("pre", { id: "preview-body" }),
  );
}

export function updatePreview(doc) {
  const target = document.getElementById("preview-body");
  if (target) target.textContent = JSON.stringify(doc, null, 2);
}

// The panel next to the form where a refusal goes: what is wrong, in
// sentences, and for a schema error the Admin API's own text, folded away.
export function errorPanel() {
  return h(
    "div",
    { class: "form-error", id: ERROR_ID, role: "alert", tabindex: "-1", hidden: true },
    h("h2", {}, "Not saved"),
    h("p", { id: `${ERROR_ID}-text`, class: "error-text" }),
    h(
      "details",
      { id: `${ERROR_ID}-raw`, class: "raw", hidden: true },
      h("summary", {}, "The Admin API's answer"),
      h("pre", { id: `${ERROR_ID}-raw-text` }),
    ),
  );
}

export function clearErrors(form) {
  const panel = document.getElementById(ERROR_ID);
  panel.hidden = true;
  for (const el of form.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    undescribe(el, ERROR_ID);
  }
}

// Show `text` in the panel and mark the fields it names; `fieldFor` maps a
// JSON pointer (e.g. "/rate_limit/rpm") to an input. A schema error is said
// as one sentence per field (its exact text stays one click away). Focus
// goes to the first named field, else to the panel.
export function showErrors(form, text, fieldFor, inputs = []) {
  clearErrors(form);
  const panel = document.getElementById(ERROR_ID);
  const sentences = schemaSentences(text);
  document.getElementById(`${ERROR_ID}-text`).textContent = sentences
    ? sentences.join("\n")
    : text;
  const raw = document.getElementById(`${ERROR_ID}-raw`);
  raw.hidden = !sentences;
  raw.open = false;
  document.getElementById(`${ERROR_ID}-raw-text`).textContent = sentences ? text : "";
  panel.hidden = false;
  const marked = [...inputs];
  for (const pointer of errorPointers(text)) {
    const input = fieldFor(pointer);
    if (input) marked.push(input);
  }
  for (const input of marked) {
    const section = input.closest("details");
    if (section) section.open = true; // a named field is never left folded away
    input.setAttribute("aria-invalid", "true");
    describe(input, ERROR_ID);
  }
  (marked[0] || panel).focus();
}

// A write-only input for a credential (a provider's key). It is never filled
// with the saved value: its help shows the last 4 characters, and `read()` of
// an empty field gives the saved value, so an edit keeps it.
export function secretField(id, name, label, saved) {
  const input = h("input", {
    id,
    name,
    type: "password",
    autocomplete: "new-password", // never autofilled with a saved (admin) password
    spellcheck: "false",
  });
  const help = saved
    ? `Saved key ${mask(saved)}. Leave empty to keep it.`
    : "Sent upstream by the gateway; never shown again after saving.";
  return {
    node: field(saved ? `${label} (new)` : label, input, help),
    input,
    read: () => input.value.trim() || saved,
  };
}

// The page of a create/edit form for /ui/<segment>/create and /ui/<segment>/<id>/edit:
// its heading, the way back to the list, and "Loading…" until the saved entry
// (when editing) and `needs` (promises) are in; then `build(saved, ...needs)`
// makes the form. A failed load says why, with the way back.
// spec: {segment, noun ("model"), list ("Models"), label(saved), needs, build}
export function formPage(main, { params, signal }, spec) {
  const editing = params.id !== undefined;
  const title = h("h1", { tabindex: "-1" }, `${editing ? "Edit" : "Add"} ${spec.noun}`);
  const status = h("p", { class: "help", "aria-busy": "true" }, "Loading…");
  const back = `/ui/${spec.segment}`;
  main.append(
    h("div", { class: "view-head" }, title),
    h(
      "nav",
      { "aria-label": "Breadcrumb", class: "crumbs" },
      h("a", { href: back }, spec.list),
      " / ",
      editing ? "Edit" : "Add",
    ),
    status,
  );
  const entry = editing
    ? adminCall("GET", `/${spec.segment}/${encodeURIComponent(params.id)}`, undefined, { signal })
    : Promise.resolve(null);
  Promise.all([entry, ...(spec.needs || [])])
    .then(([saved, ...needs]) => {
      if (signal.aborted) return;
      status.removeAttribute("aria-busy");
      status.textContent = editing ? `ID ${params.id}` : "";
      if (saved) {
        title.textContent = `Edit ${spec.noun} ${spec.label(saved)}`;
        document.title = `${title.textContent} · twisted-gw admin`;
      }
      main.append(spec.build(saved, ...needs));
    })
    .catch((err) => {
      if (err.name === "AbortError") return;
      status.removeAttribute("aria-busy");
      status.replaceChildren(
        h("span", { class: "error", role: "alert" }, err.message),
        " ",
        h("a", { href: back }, `Back to ${spec.list}`),
      );
    });
}

// An entity's <form id>: `children`, then Save changes (or Create <noun>) and
// Cancel, back to /ui/<segment>. Returns {form, submit}.
export function entityForm({ id, noun, segment, entry }, ...children) {
  const submit = h(
    "button",
    { type: "submit", class: "button primary" },
    entry ? "Save changes" : `Create ${noun}`,
  );
  const form = h(
    "form",
    {
      id,
      class: "entity-form",
      novalidate: true,
      "aria-label": `${entry ? "Edit" : "Add"} ${noun}`,
    },
    children,
    h(
      "div",
      { class: "actions" },
      submit,
      h("a", { class: "button", href: `/ui/${segment}` }, "Cancel"),
    ),
  );
  return { form, submit };
}

// Save on submit: `collect()` gives {doc, problems, ...}; problems (a number
// field that is not one) are shown and nothing is sent; else the document is
// PUT over `entry` or POSTed to /<segment>, and `done(saved, collected)` runs.
// A refusal goes to the error panel as the Admin API wrote it, marking the
// fields it names (`fieldFor`) and those `blame(message, collected)` picks.
export function saveOnSubmit(form, submit, { entry, segment, collect, fieldFor, blame, done }) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const collected = collect();
    const { doc, problems } = collected;
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
        ? await adminCall("PUT", `/${segment}/${encodeURIComponent(idOf(entry))}`, doc)
        : await adminCall("POST", `/${segment}`, doc);
      done(saved, collected);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      const text = String(err.message || err);
      showErrors(form, text, fieldFor, blame ? blame(text, collected) : []);
    } finally {
      submit.disabled = false;
    }
  });
}

// The form beside the Admin API's error panel and the request it will send;
// `preview` (which updates that request) runs on every edit and once the form
// is in the page.
export function formLayout(form, entry, segment, preview) {
  form.addEventListener("input", preview);
  form.addEventListener("change", preview);
  queueMicrotask(preview);
  const path = entry ? `/${segment}/${idOf(entry)}` : `/${segment}`;
  return h(
    "div",
    { class: "form-layout" },
    form,
    h("aside", { class: "form-side" }, errorPanel(), previewPanel(entry ? "PUT" : "POST", path)),
  );
}
