// DOM helpers. Every value from the gateway goes into the page as text
// (textContent, attribute values), never as HTML.

// h("button", {type: "button", onclick: f, class: "x"}, "text", childNode, ...)
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name in el && typeof value !== "string") {
      el[name] = value; // properties: checked, value, disabled, ...
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// A labelled input (or select/textarea) with optional help text, wired for
// screen readers: <div class="field"><label for=id>..</label><input id=id
// aria-describedby=id-help><p id=id-help>..</p></div>
export function field(label, control, help) {
  const wrap = h("div", { class: "field" }, h("label", { for: control.id }, label), control);
  if (help) {
    const helpId = `${control.id}-help`;
    wrap.append(h("p", { class: "help", id: helpId }, help));
    describe(control, helpId);
  }
  return wrap;
}

// A checkbox or radio button with its label after it:
// <div class="choice"><input type=checkbox id=..><label for=..>..</label></div>
export function choice(input, label) {
  return h("div", { class: "choice" }, input, h("label", { for: input.id }, label));
}

// A description of the Admin API's OpenAPI document as text, its `code` spans
// as <code>: "`weighted` (default)" -> [<code>weighted</code>, " (default)"].
export function docText(text) {
  if (!text) return undefined;
  return String(text)
    .split("`")
    .map((part, i) => (i % 2 ? h("code", {}, part) : part))
    .filter((part) => part !== "");
}

// Add an id to an element's aria-describedby (no duplicates).
export function describe(el, id) {
  const ids = new Set((el.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean));
  ids.add(id);
  el.setAttribute("aria-describedby", [...ids].join(" "));
}

export function undescribe(el, id) {
  const ids = (el.getAttribute("aria-describedby") || "").split(/\s+/).filter((x) => x && x !== id);
  if (ids.length) el.setAttribute("aria-describedby", ids.join(" "));
  else el.removeAttribute("aria-describedby");
}

// Polite announcement for screen readers (and the visible status line).
export function announce(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // a new text node after a tick, so the same message twice is announced twice
  setTimeout(() => {
    region.textContent = text;
  }, 30);
}

// A modal confirmation built on <dialog>: Escape and Cancel decline, focus
// starts on Cancel so Enter never deletes by accident. Resolves true/false.
export function confirmDialog({ title, message, confirm = "Delete", danger = true }) {
  return new Promise((resolve) => {
    const titleId = "confirm-title";
    const messageId = "confirm-message";
    const cancelButton = h(
      "button",
      { type: "button", class: "button", value: "cancel" },
      "Cancel",
    );
    const okButton = h(
      "button",
      { type: "button", class: danger ? "button danger" : "button primary", value: "ok" },
      confirm,
    );
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": titleId, "aria-describedby": messageId },
      h("h2", { id: titleId }, title),
      h("p", { id: messageId }, message),
      h("div", { class: "actions" }, okButton, cancelButton),
    );
    let answer = false;
    okButton.addEventListener("click", () => {
      answer = true;
      dialog.close();
    });
    cancelButton.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancelButton.focus();
  });
}

// Grouped thousands, e.g. 1234567 -> "1,234,567".
export function formatNumber(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
}
