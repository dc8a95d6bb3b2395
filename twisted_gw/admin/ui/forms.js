// Pieces shared by the model and API key forms: number inputs for limits,
// the error panel beside the form, and pointing the server's errors at fields.

import { describe, field, h, undescribe } from "./dom.js";
import { BOUNDS, LIMIT_FIELDS, LIMIT_LABELS, errorPointers } from "./schema.js";

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

// The panel next to the form where the Admin API's error text goes.
export function errorPanel() {
  return h(
    "div",
    { class: "form-error", id: ERROR_ID, role: "alert", tabindex: "-1", hidden: true },
    h("h2", {}, "Not saved"),
    h("pre", { id: `${ERROR_ID}-text` }),
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
// JSON pointer (e.g. "/rate_limit/rpm") to an input. Focus goes to the first
// named field, else to the panel.
export function showErrors(form, text, fieldFor, inputs = []) {
  clearErrors(form);
  const panel = document.getElementById(ERROR_ID);
  document.getElementById(`${ERROR_ID}-text`).textContent = text;
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
