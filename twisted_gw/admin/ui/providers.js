// Providers (CONTRACT-NEXT 1): the table (name, type, base URL, how many
// models name each) and the create/edit form of {name, type, config}. A
// type's settings are the catalog's (`provider_types`), so the form repeats
// none. A credential is never put back into the page after saving: its help
// shows the last 4 characters, and an empty field on edit keeps it. Deleting
// one that models still name is refused by the Admin API, which says so.

import { idOf, listModels, listProviders } from "./api.js";
import { field, h } from "./dom.js";
import {
  entityForm,
  formLayout,
  formPage,
  saveOnSubmit,
  secretField,
  updatePreview,
} from "./forms.js";
import { entityTable } from "./listing.js";
import { PROVIDER_TYPES, masked, providerType } from "./schema.js";

// "api_base" -> "API base URL", "secret_access_key" -> "Secret access key"
function settingLabel(name) {
  const words = name.split("_").map((w) => (w === "api" ? "API" : w));
  if (words.at(-1) === "base") words.push("URL");
  const text = words.join(" ");
  return text[0].toUpperCase() + text.slice(1);
}

function object(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}

// -- the table ------------------------------------------------------------------

// the providers, each with `uses`: how many stored models name it by provider_id
async function providersWithUses(options) {
  const [providers, models] = await Promise.all([listProviders(options), listModels(options)]);
  const uses = new Map();
  for (const m of models) {
    const id = m.value?.provider_id;
    if (typeof id === "string") uses.set(id, (uses.get(id) || 0) + 1);
  }
  return providers.map((p) => ({ ...p, uses: uses.get(idOf(p)) || 0 }));
}

// The base URL a provider's requests go to: its own (CONTRACT-NEXT 1.1:
// `api_base`, bedrock's `endpoint`), else its type's, with bedrock's region in.
function baseCell(v) {
  const config = object(v.config);
  const base = config.api_base || config.endpoint;
  if (base) return h("code", { class: "base" }, base);
  const region = config.region || "<region>";
  const fallback = providerType(v.type)?.default_base?.replace("<region>", region);
  if (fallback) return [h("span", { class: "muted" }, "default "), h("code", {}, fallback)];
  return h("span", { class: "muted" }, "none (answers locally)");
}

export function renderList(main, ctx) {
  entityTable(main, ctx, {
    segment: "providers",
    noun: "provider",
    title: "Providers",
    add: "Add provider",
    caption: "Configured providers",
    help: [
      "Upstreams that models name by ",
      h("code", {}, "provider_id"),
      ": a type, its base URL and its credentials, written once for all of them.",
    ],
    columns: ["Name", "Type", "Base URL", "Models"],
    fetch: providersWithUses,
    label: (entry) => entry.value?.name ?? idOf(entry),
    consequence: (name) =>
      `Models can no longer name “${name}”. The gateway refuses while a model still does.`,
    empty: "No providers yet. Add one, then models that name it.",
    cells(entry) {
      const v = entry.value || {};
      return [
        h("th", { scope: "row", "data-label": "Name" }, String(v.name ?? "")),
        h("td", { "data-label": "Type" }, h("span", { class: "pill" }, String(v.type ?? ""))),
        h("td", { "data-label": "Base URL" }, baseCell(v)),
        h("td", { "data-label": "Models", class: "uses" }, String(entry.uses)),
      ];
    },
  });
}

// -- the form -------------------------------------------------------------------

export function renderForm(main, ctx) {
  formPage(main, ctx, {
    segment: "providers",
    noun: "provider",
    list: "Providers",
    label: (saved) => saved.value?.name ?? "",
    build: (saved) => buildForm(saved, ctx.navigate),
  });
}

// The settings of one type, as inputs `p-<setting>` (api_key: `p-api-key`).
// `saved` is the stored config (a secret only ever as the saved value an empty
// field keeps); `typed`, what the operator typed before changing the type.
function settingsFields(type, saved, typed) {
  const row = providerType(type);
  const fields = {};
  const nodes = Object.entries(row?.config || {}).map(([name, spec]) => {
    const id = `p-${name.replaceAll("_", "-")}`;
    const label = settingLabel(name) + (spec.required ? "" : " (optional)");
    if (spec.secret) {
      const kept = typeof saved[name] === "string" ? saved[name] : "";
      const secret = secretField(id, name, label, kept);
      fields[name] = { ...spec, input: secret.input, read: secret.read };
      return secret.node;
    }
    const input = h("input", {
      id,
      name,
      autocomplete: "off",
      spellcheck: "false",
      value: typed[name] ?? saved[name],
    });
    fields[name] = { ...spec, input, read: () => input.value.trim() };
    const base = name === "api_base" || name === "endpoint" ? row.default_base : null;
    if (base) input.placeholder = base;
    return field(label, input, base ? `Empty: ${base}.` : spec.required ? "Required." : undefined);
  });
  if (!nodes.length) nodes.push(h("p", { class: "help" }, "None: this type answers locally."));
  return { nodes, fields };
}

function buildForm(entry, navigate) {
  const v = entry?.value || {};
  const savedConfig = object(v.config);

  const name = h("input", {
    id: "p-name",
    name: "name",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    value: v.name,
  });
  const names = PROVIDER_TYPES.map((t) => t.name);
  const type0 = typeof v.type === "string" ? v.type : names[0];
  const type = h(
    "select",
    { id: "p-type", name: "type" },
    names.map((t) => h("option", { value: t, selected: t === type0 }, t)),
  );
  if (!names.includes(type0)) type.prepend(h("option", { value: type0, selected: true }, type0));
  const typeField = field("Type", type, " ");
  const typeHelp = typeField.querySelector(".help");
  const settings = h("fieldset", { id: "p-config" });
  let fields = {};

  // A new type gets its own settings. What was typed carries over to a setting
  // of the same name, but a secret does not: a key belongs to one upstream.
  function typeChanged() {
    const typed = {};
    for (const [k, f] of Object.entries(fields)) if (!f.secret) typed[k] = f.input.value;
    const saved = type.value === v.type ? savedConfig : {};
    const built = settingsFields(type.value, saved, typed);
    fields = built.fields;
    settings.replaceChildren(h("legend", {}, "Settings (config)"), ...built.nodes);
    const row = providerType(type.value);
    typeHelp.textContent = row
      ? `Chat${row.embeddings ? " and embeddings" : " only"}.`
      : "Not a type this gateway knows.";
  }
  type.addEventListener("change", typeChanged);
  typeChanged();

  const { form, submit } = entityForm(
    { id: "provider-form", noun: "provider", segment: "providers", entry },
    h(
      "div",
      { class: "row" },
      field("Name", name, "What the lists show; need not be unique."),
      typeField,
    ),
    settings,
  );

  // "/config" (a required setting missing): the first required one left empty
  const fieldFor = (pointer) => {
    if (pointer === "/name") return name;
    if (pointer === "/type") return type;
    if (pointer.startsWith("/config/")) return fields[pointer.slice(8)]?.input || null;
    if (pointer !== "/config") return null;
    const all = Object.values(fields);
    return (all.find((f) => f.required && !f.read()) || all[0])?.input || type;
  };

  function collect() {
    const config = {};
    for (const [k, f] of Object.entries(fields)) {
      const value = f.read();
      if (value) config[k] = value;
    }
    return { doc: { name: name.value.trim(), type: type.value, config }, problems: [] };
  }
  const preview = () => {
    const { doc } = collect();
    const secrets = Object.keys(fields).filter((k) => fields[k].secret);
    updatePreview({ ...doc, config: masked(doc.config, secrets) });
  };

  saveOnSubmit(form, submit, {
    entry,
    segment: "providers",
    fieldFor,
    collect,
    done(saved, { doc }) {
      navigate("/ui/providers", {
        flash: `Provider ${saved.value?.name ?? doc.name} ${entry ? "saved" : "created"}.`,
      });
    },
  });
  return formLayout(form, entry, "providers", preview);
}
