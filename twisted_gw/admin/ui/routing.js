// The model form's routing parts (CONTRACT 5.1): the model's deployments
// (its own weight and its targets), routing (strategy, retries, retry_on,
// cooldown) and fallbacks. Each part is {node, read(doc, problems),
// fieldFor(pointer)}: `read` puts the part's fields into the document to send
// and a number that is not one into `problems`; a field the document did not
// have and the operator left empty is not written, so a document without
// routing round-trips unchanged.

import { choice, docText, field, h } from "./dom.js";
import { numberInput, readNumberInto } from "./forms.js";
import { BOUNDS } from "./schema.js";
import { upstreamFields } from "./upstream.js";

// `part` when it has fields or the document had it, else undefined
function kept(part, had) {
  return had || Object.keys(part).length ? part : undefined;
}

function object(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}

// Tell the form something changed that no input event says (rows added,
// removed or moved), so its preview follows.
function changed(node) {
  node.dispatchEvent(new Event("input", { bubbles: true }));
}

// <fieldset id><legend>legend</legend><p class=help>help</p>...children</fieldset>
function fieldset(id, legend, help, ...children) {
  return h(
    "fieldset",
    { id },
    h("legend", {}, legend),
    help ? h("p", { class: "help" }, help) : null,
    children,
  );
}

// fields side by side, as many as fit
function trio(...fields) {
  return h("div", { class: "trio" }, fields);
}

function smallButton(text, attrs) {
  return h("button", { type: "button", class: "button small", ...attrs }, text);
}

// -- deployments ---------------------------------------------------------------

// One target: an upstream of its own, and its weight, priority and timeout.
function targetRow(prefix, value, tables, onRemove) {
  const up = upstreamFields(prefix, value);
  const numbers = {
    weight: numberInput(`${prefix}-weight`, value.weight, { min: 1, max: tables.bounds.weight }),
    priority: numberInput(`${prefix}-priority`, value.priority, { max: tables.bounds.priority }),
    timeout: numberInput(`${prefix}-timeout`, value.timeout, { max: BOUNDS.timeout_ms }),
  };
  const labels = { weight: "Weight", priority: "Priority", timeout: "Timeout (ms)" };
  const help = {
    weight: tables.help.target_weight,
    priority: tables.help.target_priority,
    timeout: tables.help.target_timeout,
  };
  const legend = h("legend");
  const remove = smallButton("Remove", { class: "button small danger", onclick: onRemove });
  let name = "";
  const node = h(
    "fieldset",
    { class: "target" },
    legend,
    up.nodes,
    trio(Object.entries(numbers).map(([k, input]) => field(labels[k], input, docText(help[k])))),
    h("div", { class: "inline-actions" }, remove),
  );
  return {
    node,
    number(n) {
      name = `Deployment ${n}`;
      legend.textContent = name;
      remove.setAttribute("aria-label", `Remove deployment ${n}`);
    },
    focus() {
      node.querySelector("select").focus();
    },
    read(problems) {
      const target = up.read();
      for (const [k, input] of Object.entries(numbers))
        readNumberInto(target, k, input, `${name}: ${labels[k]}`, problems);
      // a field the form does not edit (issue 17's pricing) is kept as it was
      if (value.pricing !== undefined) target.pricing = value.pricing;
      return target;
    },
    fieldFor(pointer) {
      const key = pointer.slice(1);
      return numbers[key] || up.fieldFor(pointer) || node.querySelector("select");
    },
  };
}

// The model's own weight (deployment 0) and its targets (deployments 1..n).
export function deploymentsPart(v, tables) {
  const weight = numberInput("m-weight", v.weight, { min: 1, max: tables.bounds.weight });
  const list = h("div", { id: "m-targets" });
  const add = smallButton("Add target", { id: "m-target-add" });
  const rows = [];
  let serial = 0;

  function addRow(value) {
    const row = targetRow(`m-t${++serial}`, value, tables, () => {
      rows.splice(rows.indexOf(row), 1);
      row.node.remove();
      rows.forEach((r, i) => r.number(i + 1));
      changed(list);
      add.focus();
    });
    rows.push(row);
    row.number(rows.length);
    list.append(row.node);
    return row;
  }
  for (const target of Array.isArray(v.targets) ? v.targets : []) addRow(object(target));
  add.addEventListener("click", () => {
    addRow({}).focus();
    changed(list);
  });

  const node = fieldset(
    "m-deployments",
    "Deployments",
    ["The upstream above is deployment 0. ", docText(tables.help.targets)],
    field("Weight of deployment 0", weight, docText(tables.help.weight)),
    list,
    h("div", { class: "inline-actions" }, add),
  );
  return {
    node,
    read(doc, problems) {
      readNumberInto(doc, "weight", weight, "Weight of deployment 0", problems);
      const targets = rows.map((row) => row.read(problems));
      if (targets.length || Array.isArray(v.targets)) doc.targets = targets;
    },
    fieldFor(pointer) {
      if (pointer === "/weight") return weight;
      const m = /^\/targets(?:\/(\d+)(\/.*)?)?$/.exec(pointer);
      if (!m) return null;
      const row = m[1] === undefined ? null : rows[Number(m[1])];
      return row ? row.fieldFor(m[2] || "") : add;
    },
  };
}

// -- routing -------------------------------------------------------------------

// retry_on: the gateway's default, or the reasons checked and the statuses typed.
function retryOnPart(given, tables) {
  const list = Array.isArray(given) ? given : null;
  const reasons = tables.reasons;
  const byDefault = h("input", { type: "checkbox", id: "m-retry-default", checked: !list });
  const boxes = reasons.map((r) =>
    h("input", { type: "checkbox", id: `m-retry-${r}`, value: r, checked: !!list?.includes(r) }),
  );
  const others = (items) => items.filter((x) => !reasons.includes(x)).join(", ");
  const statuses = h("input", {
    id: "m-retry-statuses",
    name: "retry-statuses",
    autocomplete: "off",
    spellcheck: "false",
    value: list ? others(list) : undefined,
  });
  const controls = [...boxes, statuses];
  let items = []; // what the last read sent: [{value, input}]

  const enable = () => {
    for (const input of controls) input.disabled = byDefault.checked;
  };
  // leaving the default starts from it, so a change is one box or one code away
  byDefault.addEventListener("change", () => {
    enable();
    const untouched = !statuses.value.trim() && !boxes.some((b) => b.checked);
    if (!byDefault.checked && untouched && tables.defaultRetryOn) {
      for (const box of boxes) box.checked = tables.defaultRetryOn.includes(box.value);
      statuses.value = others(tables.defaultRetryOn);
    }
  });
  enable();

  const defaultText = tables.defaultRetryOn ? `: ${tables.defaultRetryOn.join(", ")}` : "";
  return {
    node: fieldset(
      "m-retry-on",
      "Retry on",
      docText(tables.help.retry_on),
      choice(byDefault, `The gateway's default${defaultText}`),
      boxes.length
        ? h(
            "div",
            { class: "choice-grid" },
            boxes.map((box) => choice(box, box.value)),
          )
        : null,
      field(
        "Upstream status codes",
        statuses,
        reasons.length
          ? "Comma or space separated, e.g. 429, 503."
          : "Reasons and status codes, comma or space separated.",
      ),
    ),
    // the list to send, or undefined for the default
    read() {
      if (byDefault.checked) {
        items = [];
        return undefined;
      }
      items = boxes.filter((b) => b.checked).map((b) => ({ value: b.value, input: b }));
      for (const token of statuses.value.split(/[\s,]+/).filter(Boolean)) {
        items.push({ value: /^\d+$/.test(token) ? Number(token) : token, input: statuses });
      }
      return items.map((item) => item.value);
    },
    fieldFor(index) {
      if (index === undefined) return byDefault.checked ? byDefault : statuses;
      return items[Number(index)]?.input || statuses;
    },
  };
}

export function routingPart(v, tables) {
  const r = object(v.routing);
  const strategies = [...tables.strategies];
  if (r.strategy !== undefined && !strategies.includes(r.strategy)) strategies.push(r.strategy);
  const strategy = h(
    "select",
    { id: "m-strategy", name: "strategy" },
    h("option", { value: "" }, "Default"),
    strategies.map((s) => h("option", { value: s, selected: s === r.strategy }, String(s))),
  );
  const retries = numberInput("m-retries", r.retries, { max: tables.bounds.retries });
  const retryOn = retryOnPart(r.retry_on, tables);
  const c = object(r.cooldown);
  const cooldown = [
    ["failures", "Failures", tables.bounds.cooldown_failures],
    ["window_ms", "Window (ms)", tables.bounds.cooldown_ms],
    ["duration_ms", "Duration (ms)", tables.bounds.cooldown_ms],
  ].map(([key, label, max]) => ({
    key,
    label,
    input: numberInput(`m-cooldown-${key}`, c[key], { min: 1, max }),
  }));
  const inputs = { strategy, retries, cooldown: cooldown[0].input };
  for (const { key, input } of cooldown) inputs[`cooldown/${key}`] = input;

  const node = fieldset(
    "m-routing",
    "Routing",
    docText(tables.help.routing),
    trio(
      field("Strategy", strategy, docText(tables.help.strategy)),
      field("Retries", retries, docText(tables.help.retries)),
    ),
    retryOn.node,
    fieldset(
      "m-cooldown",
      "Cooldown",
      docText(tables.help.cooldown),
      trio(cooldown.map(({ key, label, input }) => field(`${label} (${key})`, input))),
    ),
  );
  return {
    node,
    read(doc, problems) {
      const out = {};
      if (strategy.value) out.strategy = strategy.value;
      readNumberInto(out, "retries", retries, "Retries", problems);
      const retryList = retryOn.read();
      if (retryList) out.retry_on = retryList;
      const cd = {};
      for (const { key, label, input } of cooldown)
        readNumberInto(cd, key, input, `Cooldown ${label}`, problems);
      const cooldownDoc = kept(cd, "cooldown" in r);
      if (cooldownDoc) out.cooldown = cooldownDoc;
      const routing = kept(out, v.routing !== undefined);
      if (routing) doc.routing = routing;
    },
    fieldFor(pointer) {
      const m = /^\/routing(?:\/(.*))?$/.exec(pointer);
      if (!m) return null;
      const rest = m[1] || "strategy";
      const retry = /^retry_on(?:\/(\d+))?$/.exec(rest);
      return retry ? retryOn.fieldFor(retry[1]) : inputs[rest] || strategy;
    },
  };
}

// -- fallbacks -----------------------------------------------------------------

// The models tried next, in order, picked from the existing model names
// (`names`; the model's own name, as typed in `nameInput`, is not offered).
export function fallbacksPart(v, tables, names, nameInput) {
  const chosen = Array.isArray(v.fallbacks) ? v.fallbacks.map(String) : [];
  const known = new Set(names);
  const list = h("ol", { id: "m-fallbacks", class: "fallbacks" });
  const pick = h("select", { id: "m-fallback-pick", name: "fallback" });
  const add = smallButton("Add fallback", { id: "m-fallback-add" });

  // re-render, then move the focus to what `focus()` names in the new list
  function update(focus) {
    render();
    changed(list);
    focus()?.focus();
  }
  // after an add or a remove: the picker, or the last fallback when no name is left
  const nextFocus = () =>
    pick.disabled ? list.querySelector("li:last-child button:not(:disabled)") : pick;
  function move(i, by) {
    chosen.splice(i + by, 0, ...chosen.splice(i, 1));
    update(() => list.children[i + by]?.querySelector("button:not(:disabled)"));
  }
  function item(name, i) {
    return h(
      "li",
      { dataset: { name } },
      h("code", {}, name),
      known.has(name) ? null : h("span", { class: "muted" }, " (no such model)"),
      h(
        "span",
        { class: "inline-actions" },
        smallButton("↑", {
          "aria-label": `Move ${name} up`,
          disabled: i === 0,
          onclick: () => move(i, -1),
        }),
        smallButton("↓", {
          "aria-label": `Move ${name} down`,
          disabled: i === chosen.length - 1,
          onclick: () => move(i, 1),
        }),
        smallButton("Remove", {
          "aria-label": `Remove fallback ${name}`,
          onclick: () => {
            chosen.splice(i, 1);
            update(nextFocus);
          },
        }),
      ),
    );
  }
  function render() {
    list.replaceChildren(...chosen.map(item));
    list.hidden = !chosen.length;
    const own = nameInput.value.trim();
    const free = names.filter((n) => n !== own && !chosen.includes(n));
    const current = pick.value;
    pick.replaceChildren(
      ...(free.length
        ? free.map((n) => h("option", { value: n, selected: n === current }, n))
        : [h("option", { value: "" }, "No other models")]),
    );
    pick.disabled = add.disabled = !free.length;
  }
  add.addEventListener("click", () => {
    if (!pick.value) return;
    chosen.push(pick.value);
    update(nextFocus);
  });
  nameInput.addEventListener("input", render);
  render();

  return {
    node: fieldset(
      "m-fallbacks-set",
      "Fallbacks",
      docText(tables.help.fallbacks),
      list,
      h(
        "div",
        { class: "pick-row" },
        field("Add a fallback", pick),
        h("div", { class: "inline-actions" }, add),
      ),
    ),
    read(doc) {
      if (chosen.length || Array.isArray(v.fallbacks)) doc.fallbacks = [...chosen];
    },
    fieldFor(pointer) {
      return /^\/fallbacks(\/|$)/.test(pointer) ? pick : null;
    },
  };
}
