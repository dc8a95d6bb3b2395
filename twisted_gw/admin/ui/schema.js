// What the forms know of the entity schemas (CONTRACT 2): the provider
// families, the rate-limit kinds and the bounds of a document's numbers are
// the gateway's own tables, fetched from /ui/catalog.json, so none of them is
// repeated here. The server's validation stays the judge: its error text is
// shown as it comes.

export const CATALOG_URL = "/ui/catalog.json";

async function loadCatalog() {
  let response;
  try {
    response = await fetch(CATALOG_URL, { cache: "no-cache", credentials: "omit" });
  } catch (err) {
    throw new Error(`Could not reach the gateway (${err.message}).`);
  }
  if (!response.ok) throw new Error(`GET ${CATALOG_URL}: HTTP ${response.status}.`);
  return response.json();
}

// Every module that imports this one waits for the catalog (a top-level
// await). No view can be built without it, so the page says why instead of
// staying blank.
export const CATALOG = await loadCatalog().catch((err) => {
  const message = document.createElement("p");
  message.className = "error";
  message.setAttribute("role", "alert");
  message.textContent = `The admin UI could not load its catalog: ${err.message} Reload to retry.`;
  document.getElementById("main")?.replaceChildren(message);
  throw err;
});

const FAMILIES = new Map(CATALOG.providers.map((p) => [p.name, p]));

// the provider entity's types (CONTRACT-NEXT 1.1), in the order of its schema:
// [{name, default_base, embeddings, config: {setting: {required, secret}}}]
export const PROVIDER_TYPES = CATALOG.provider_types;
const TYPES = new Map(PROVIDER_TYPES.map((t) => [t.name, t]));

// A provider type's row of the catalog, if known.
export function providerType(name) {
  return TYPES.get(name);
}

// CONTRACT-NEXT 1.5: a model document follows the legacy wire (CONTRACT 2)
// iff it has provider_config and no provider_id; any other, the later one.
export function isLegacyModel(doc) {
  return !!doc && "provider_config" in doc && !("provider_id" in doc);
}

// the provider names, in the order of the model pattern
export const PROVIDERS = CATALOG.providers.map((p) => p.name);
// the rate-limit kinds, in the order they are checked
export const LIMIT_FIELDS = CATALOG.rate_limits.map((k) => k.name);
// a short label per kind, for the forms
export const LIMIT_LABELS = Object.fromEntries(CATALOG.rate_limits.map((k) => [k.name, k.label]));
// the default base URL per provider; a local one has none
export const DEFAULT_BASES = Object.fromEntries(
  CATALOG.providers.filter((p) => p.default_base).map((p) => [p.name, p.default_base]),
);
// {timeout_ms, rate_limit}: the largest values the Admin API accepts (CONTRACT 5.5)
export const BOUNDS = CATALOG.bounds;

// Routing's tables (CONTRACT 5.1), for the model form: {strategies, reasons,
// defaultRetryOn, bounds: {weight, priority, retries, cooldown_failures,
// cooldown_ms}} from the catalog (`CATALOG.routing`), and help: the Admin
// API's own descriptions, read from /openapi.json. A gateway that serves no
// OpenAPI document leaves the help empty: the form still edits the fields and
// the Admin API's errors still judge them.
let routing = null;
export function loadRouting() {
  routing ??= fetchJson("/openapi.json")
    .catch(() => null)
    .then(routingTables);
  return routing;
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-cache", credentials: "omit" });
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}.`);
  return response.json();
}

function routingTables(openapi) {
  const schemas = openapi?.components?.schemas || {};
  const model = schemas.Model?.properties || {};
  const target = schemas.Target?.properties || {};
  const props = schemas.Routing?.properties || {};
  const given = CATALOG.routing;
  return {
    strategies: given.strategies,
    reasons: given.retry_reasons,
    defaultRetryOn: given.default_retry_on,
    bounds: given.bounds,
    help: {
      weight: model.weight?.description,
      targets: model.targets?.description,
      fallbacks: model.fallbacks?.description,
      target_weight: target.weight?.description,
      target_priority: target.priority?.description,
      target_timeout: target.timeout?.description,
      routing: schemas.Routing?.description,
      strategy: props.strategy?.description,
      retries: props.retries?.description,
      retry_on: props.retry_on?.description,
      cooldown: props.cooldown?.description,
    },
  };
}

// A provider's row of the catalog ({name, description, example_model, ...}), if known.
export function family(provider) {
  return FAMILIES.get(provider);
}

// Real providers take {api_key, api_base?}; one with no settings (mock) takes {} exactly.
export function isRemote(provider) {
  const row = FAMILIES.get(provider);
  return !row || Object.keys(row.provider_config).length > 0;
}

// "openai/org/model" -> ["openai", "org/model"] (the id may contain "/").
export function splitModel(model) {
  const text = String(model ?? "");
  const slash = text.indexOf("/");
  return slash < 0 ? [text, ""] : [text.slice(0, slash), text.slice(slash + 1)];
}

// A secret as its last characters, long and short ones alike: 4 of them, but
// never more than half of the secret (a 6-character key shows 3).
export function mask(secret) {
  const text = String(secret ?? "");
  if (!text) return "";
  const shown = Math.min(4, Math.floor(text.length / 2));
  return `••••${shown ? text.slice(-shown) : ""}`;
}

// `doc` with the values of the keys `secrets` names masked (for a preview).
export function masked(doc, secrets) {
  if (!doc || typeof doc !== "object") return doc;
  const copy = { ...doc };
  for (const name of secrets) if (copy[name]) copy[name] = mask(copy[name]);
  return copy;
}

// A new API key: "sk-" and 32 random bytes (256 bits) in base64url.
export function generateKey() {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `sk-${btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "")}`;
}

// {rpm: 100, tpm: 10000} -> "rpm 100 · tpm 10,000"; none -> ""
export function formatLimits(limits) {
  if (!limits || typeof limits !== "object") return "";
  return LIMIT_FIELDS.filter((k) => Number.isInteger(limits[k]))
    .map((k) => `${k} ${limits[k].toLocaleString("en-US")}`)
    .join(" · ");
}

// The JSON pointers an Admin API 400 names, e.g.
// 'JSON schema validation error: property "/rate_limit/rpm" validation failed: ...'
export function errorPointers(message) {
  return [...String(message).matchAll(/property "([^"]*)" validation failed/g)].map((m) => m[1]);
}
