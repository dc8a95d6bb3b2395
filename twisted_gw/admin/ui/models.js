// Models: the table, and the create/edit form, on either wire: a model that
// names a stored provider (CONTRACT-NEXT 1.3: {name, provider_id, model,
// timeout?, rate_limit?}) or one with its own provider_config (CONTRACT 2
// "Model", with routing, 5.1). A document is edited on its own wire.
// A provider key is never put back into the page after saving: the table and
// the form show its last 4 characters, and an empty key field on edit keeps it.

import { idOf, listModels, listProviders } from "./api.js";
import { choice, field, h } from "./dom.js";
import {
  entityForm,
  formLayout,
  formPage,
  limitsFieldset,
  numberInput,
  readLimits,
  readNumberInto,
  saveOnSubmit,
  updatePreview,
} from "./forms.js";
import { entityTable } from "./listing.js";
import { deploymentsPart, fallbacksPart, routingPart } from "./routing.js";
import { BOUNDS, formatLimits, isLegacyModel, loadRouting, mask, splitModel } from "./schema.js";
import { maskedConfig, providerFields, upstreamFields } from "./upstream.js";

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

// -- the table ------------------------------------------------------------------

// The Provider cell: the family and its provider_config (legacy), or the stored
// provider the model names, by name and type.
function providerCell(v, provider) {
  if (!isLegacyModel(v)) {
    const p = provider?.value;
    return p
      ? [h("span", { class: "pill" }, String(p.name ?? "")), h("div", { class: "sub" }, p.type)]
      : [
          h("code", {}, String(v.provider_id ?? "")),
          h("div", { class: "sub" }, "no such provider"),
        ];
  }
  const pc = v.provider_config || {};
  const details = [];
  if (pc.api_key) details.push(h("span", { class: "secret" }, `key ${mask(pc.api_key)}`));
  if (pc.api_base) details.push(h("span", { class: "base" }, pc.api_base));
  return [
    h("span", { class: "pill" }, splitModel(v.model)[0]),
    details.length ? h("div", { class: "sub" }, details) : null,
  ];
}

// the models, each with the stored provider it names (if any) as `provider`
async function modelsWithProviders(options) {
  const [models, providers] = await Promise.all([listModels(options), listProviders(options)]);
  const byId = new Map(providers.map((p) => [idOf(p), p]));
  return models.map((m) => ({ ...m, provider: byId.get(m.value?.provider_id) }));
}

export function renderList(main, ctx) {
  entityTable(main, ctx, {
    segment: "models",
    noun: "model",
    title: "Models",
    add: "Add model",
    caption: "Configured models",
    help: ["What clients put in ", h("code", {}, "model"), ", and where the gateway sends it."],
    columns: ["Name", "Provider", "Upstream model", "Timeout", "Limits"],
    fetch: modelsWithProviders,
    label: (entry) => entry.value?.name ?? idOf(entry),
    consequence: (name) =>
      `Requests for “${name}” will get model_not_found at once. API keys that allow it keep the name.`,
    empty: "No models yet. Add one to start.",
    cells(entry) {
      const v = entry.value || {};
      const upstream = isLegacyModel(v) ? splitModel(v.model)[1] : String(v.model ?? "");
      return [
        h("th", { scope: "row", "data-label": "Name" }, String(v.name ?? "")),
        h("td", { "data-label": "Provider" }, providerCell(v, entry.provider)),
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
      ];
    },
  });
}

// -- the form -------------------------------------------------------------------

export function renderForm(main, ctx) {
  const { signal, navigate } = ctx;
  // the names a fallback is picked from; without them the form still keeps the saved ones
  const names = listModels({ signal })
    .then((list) => list.map((e) => e.value?.name).filter((n) => typeof n === "string"))
    .catch(() => []);
  formPage(main, ctx, {
    segment: "models",
    noun: "model",
    list: "Models",
    label: (saved) => saved.value?.name ?? "",
    needs: [loadRouting(), names, listProviders({ signal })],
    build: (saved, tables, modelNames, providers) =>
      buildForm(saved, navigate, tables, modelNames.sort(), providers),
  });
}

// The choice of wire: a stored provider, or the model's own provider_config.
// A saved model keeps its own; a new one names a provider when there is one.
function wirePart(v, editing, providers) {
  const legacy = editing ? isLegacyModel(v) : !providers.length;
  const radio = (value, checked) =>
    h("input", { type: "radio", name: "wire", id: `m-wire-${value}`, value, checked });
  const entity = radio("provider", !legacy);
  const own = radio("config", legacy);
  return {
    node: h(
      "fieldset",
      { id: "m-wire", class: "wire" },
      h("legend", {}, "Upstream"),
      choice(entity, ["A stored provider (", h("code", {}, "provider_id"), ")"]),
      choice(own, [
        "Its own ",
        h("code", {}, "provider_config"),
        " (with deployments and fallbacks)",
      ]),
    ),
    legacy: () => own.checked,
  };
}

function buildForm(entry, navigate, tables, modelNames, providers) {
  const v = entry?.value || {};

  const name = h("input", {
    id: "m-name",
    name: "name",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    value: v.name,
  });
  const wire = wirePart(v, Boolean(entry), providers);
  const named = providerFields(isLegacyModel(v) ? {} : v, providers);
  const own = upstreamFields("m", isLegacyModel(v) ? v : {});
  const ownNodes = h("div", { id: "m-own" }, own.nodes);
  const timeout = numberInput("m-timeout", v.timeout, { max: BOUNDS.timeout_ms });
  // the parts of CONTRACT 5.1, folded away until a document uses them
  const parts = [
    deploymentsPart(v, tables),
    routingPart(v, tables),
    fallbacksPart(v, tables, modelNames, name),
  ];
  const routed = ["weight", "targets", "routing", "fallbacks"].some((k) => k in v);
  const routing = h(
    "details",
    { class: "routing", id: "m-routing-section", open: routed },
    h("summary", {}, "Deployments, retries and fallbacks"),
    parts.map((part) => part.node),
  );
  // the later wire has no provider_config and no routing: their fields go away
  function wireChanged() {
    const legacy = wire.legacy();
    named.node.hidden = legacy;
    ownNodes.hidden = !legacy;
    routing.hidden = !legacy;
  }
  wire.node.addEventListener("change", wireChanged);
  wireChanged();

  const { form, submit } = entityForm(
    { id: "model-form", noun: "model", segment: "models", entry },
    field("Name", name, "Unique; what clients send as model."),
    wire.node,
    named.node,
    ownNodes,
    field(
      "Timeout (ms)",
      timeout,
      "Wait for the upstream's answer (streams: first chunk, then between chunks). Empty or 0: the gateway's upstream_timeout.",
    ),
    limitsFieldset("m", v.rate_limit),
    routing,
  );

  const fieldFor = (pointer) =>
    ({ "/name": name, "/timeout": timeout })[pointer] ||
    (wire.legacy() ? own.fieldFor(pointer) : named.fieldFor(pointer)) ||
    (pointer.startsWith("/rate_limit/")
      ? document.getElementById(`m-${pointer.slice(12)}`)
      : null) ||
    parts.map((part) => part.fieldFor(pointer)).find(Boolean) ||
    null;

  // The document to send, and what cannot be sent (a number field that is not one).
  function collect() {
    const problems = [];
    const legacy = wire.legacy();
    const doc = { name: name.value.trim(), ...(legacy ? own.read() : named.read()) };
    readNumberInto(doc, "timeout", timeout, "Timeout", problems);
    const limits = readLimits("m", problems);
    if (limits) doc.rate_limit = limits;
    if (legacy) for (const part of parts) part.read(doc, problems);
    // a field the form does not edit (issue 17's pricing) is kept as it was
    if (v.pricing !== undefined) doc.pricing = v.pricing;
    return { doc, problems };
  }
  const preview = () => {
    const { doc } = collect();
    if (isLegacyModel(doc)) doc.provider_config = maskedConfig(doc.provider_config);
    if (doc.targets) {
      doc.targets = doc.targets.map((t) => ({
        ...t,
        provider_config: maskedConfig(t.provider_config),
      }));
    }
    updatePreview(doc);
  };

  saveOnSubmit(form, submit, {
    entry,
    segment: "models",
    fieldFor,
    collect,
    blame: (text) =>
      /already exists/.test(text)
        ? [name]
        : /^Provider with ID /.test(text) && !wire.legacy()
          ? [named.provider]
          : [],
    done(saved, { doc }) {
      navigate("/ui/models", {
        flash: `Model ${saved.value?.name ?? doc.name} ${entry ? "saved" : "created"}.`,
      });
    },
  });
  return formLayout(form, entry, "models", preview);
}
