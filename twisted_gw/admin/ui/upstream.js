// The upstream of one deployment (CONTRACT 2 "Model", 5.1 "targets"): its
// provider family, upstream model id and provider_config, as the model form
// shows them for the model itself and for each of its targets. A provider key
// is never put back into the page: the help shows its last 4 characters, and
// an empty key field keeps the saved key.

import { field, h } from "./dom.js";
import { DEFAULT_BASES, PROVIDERS, family, isRemote, mask, splitModel } from "./schema.js";

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
  const apiKey = text("api-key", {
    type: "password",
    autocomplete: "new-password", // never autofilled with a saved (admin) password
  });
  const apiBase = text("api-base", { type: "url", value: v.provider_config?.api_base });

  const providerField = field("Provider", provider, " ");
  const providerHelp = providerField.querySelector(".help");
  const keyHelp = savedKey
    ? `Saved key ${mask(savedKey)}. Leave empty to keep it.`
    : "Sent upstream by the gateway; never shown again after saving.";
  const baseField = field("API base URL (optional)", apiBase, " ");
  const baseHelp = baseField.querySelector(".help");
  const remote = h(
    "fieldset",
    { id: `${prefix}-remote`, class: "remote" },
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
        const key = apiKey.value.trim() || savedKey;
        if (key) pc.api_key = key;
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
  return pc?.api_key ? { ...pc, api_key: mask(pc.api_key) } : pc;
}
