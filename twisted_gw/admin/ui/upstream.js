// The upstream of one deployment: on the legacy wire (CONTRACT 2 "Model",
// 5.1 "targets") its provider family, upstream model id and provider_config,
// as the model form shows them for the model itself and for each of its
// targets; on the later wire (CONTRACT-NEXT 1.3) a stored provider and the
// upstream model id. A provider key is never put back into the page: the help
// shows its last 4 characters, and an empty key field keeps the saved key.

import { idOf } from "./api.js";
import { field, h } from "./dom.js";
import { secretField } from "./forms.js";
import { DEFAULT_BASES, PROVIDERS, family, isRemote, masked, splitModel } from "./schema.js";

// The inputs of one upstream, with ids `${prefix}-provider`, `-upstream`,
// `-api-key`, `-api-base` and the connection fieldset `${prefix}-remote`.
// `value` is the document part it edits ({model, provider_config}).
export function upstreamFields(prefix, value) {
  const v = value || {};
  const [provider0, upstream0] = v.model ? splitModel(v.model) : [PROVIDERS[0], ""];
  const savedKey = v.provider_config?.api_key || "";
  const text = (name, attrs) =>
    h("input", {
      id: `${prefix}-${name}`,
      name,
      autocomplete: "off",
      spellcheck: "false",
      ...attrs,
    });

  const provider = h(
    "select",
    { id: `${prefix}-provider`, name: "provider" },
    PROVIDERS.map((p) => h("option", { value: p, selected: p === provider0 }, p)),
  );
  if (!PROVIDERS.includes(provider0))
    provider.prepend(h("option", { value: provider0, selected: true }, provider0));
  const upstream = text("upstream", { required: true, value: upstream0 });
  const key = secretField(`${prefix}-api-key`, "api-key", "Provider API key", savedKey);
  const apiKey = key.input;
  const apiBase = text("api-base", { type: "url", value: v.provider_config?.api_base });

  const providerField = field("Provider", provider, " ");
  const providerHelp = providerField.querySelector(".help");
  const baseField = field("API base URL (optional)", apiBase, " ");
  const baseHelp = baseField.querySelector(".help");
  const remote = h(
    "fieldset",
    { id: `${prefix}-remote`, class: "remote" },
    h("legend", {}, "Provider connection"),
    key.node,
    baseField,
  );

  function providerChanged() {
    const p = provider.value;
    remote.hidden = !isRemote(p);
    remote.disabled = !isRemote(p);
    const base = DEFAULT_BASES[p];
    apiBase.placeholder = base || "";
    baseHelp.textContent = base
      ? `Empty: ${base}. Any OpenAI-compatible server works for openai.`
      : "";
    upstream.placeholder = family(p)?.example_model || "";
    providerHelp.textContent = family(p)?.description || "";
  }
  provider.addEventListener("change", providerChanged);
  providerChanged();

  return {
    nodes: [
      h(
        "div",
        { class: "row" },
        providerField,
        field("Upstream model", upstream, "Sent upstream as model; may contain /."),
      ),
      remote,
    ],
    // {model, provider_config} as the Admin API takes them
    read() {
      const pc = {};
      if (isRemote(provider.value)) {
        const secret = key.read();
        if (secret) pc.api_key = secret;
        if (apiBase.value.trim()) pc.api_base = apiBase.value.trim();
      }
      return { model: `${provider.value}/${upstream.value.trim()}`, provider_config: pc };
    },
    // the input a JSON pointer below this upstream (e.g. "/provider_config/api_key") names
    fieldFor(pointer) {
      return {
        "/model": upstream,
        "/provider_config": isRemote(provider.value) ? apiKey : provider,
        "/provider_config/api_key": apiKey,
        "/provider_config/api_base": apiBase,
      }[pointer];
    },
  };
}

// A provider_config as the preview shows it: the key as its last 4 characters.
export function maskedConfig(pc) {
  return masked(pc, ["api_key"]);
}

// The later wire's upstream (CONTRACT-NEXT 1.3): a stored provider, picked by
// name (and type; names need not be unique), and the upstream model id, sent
// as typed. Inputs `m-provider-id` and `m-provider-model`; `providers` are the
// stored entries. A provider_id no stored provider has is kept, and said so.
export function providerFields(value, providers) {
  const v = value || {};
  const chosen = typeof v.provider_id === "string" ? v.provider_id : "";
  const sorted = [...providers].sort((a, b) =>
    String(a.value?.name ?? "").localeCompare(String(b.value?.name ?? "")),
  );
  const options = sorted.map((entry) =>
    h(
      "option",
      { value: idOf(entry), selected: idOf(entry) === chosen, title: `ID ${idOf(entry)}` },
      `${entry.value?.name ?? idOf(entry)} (${entry.value?.type ?? "?"})`,
    ),
  );
  if (chosen && !sorted.some((entry) => idOf(entry) === chosen))
    options.unshift(h("option", { value: chosen, selected: true }, `${chosen} (no such provider)`));
  const provider = h("select", { id: "m-provider-id", name: "provider_id" }, options);
  const model = h("input", {
    id: "m-provider-model",
    name: "provider-model",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    value: typeof v.model === "string" ? v.model : undefined,
  });
  const help = options.length
    ? "Where the model's requests go: its type, base URL and credentials."
    : ["No providers yet: ", h("a", { href: "/ui/providers/create" }, "add one"), " first."];
  return {
    node: h(
      "div",
      { class: "row" },
      field("Provider", provider, help),
      field(
        "Upstream model",
        model,
        "Sent upstream as model, exactly as typed (may hold /, : or an ARN).",
      ),
    ),
    // {provider_id, model} as the Admin API takes them
    read: () => ({ provider_id: provider.value, model: model.value }),
    fieldFor: (pointer) => ({ "/provider_id": provider, "/model": model })[pointer],
    provider,
  };
}
