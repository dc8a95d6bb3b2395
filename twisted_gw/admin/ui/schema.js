// What the forms know of the entity schemas (CONTRACT 2). The server's
// validation stays the judge: its error text is shown as it comes.
// tests/test_ui_routes.py checks these two lists against twisted_gw.config.entities.

export const PROVIDERS = ["openai", "deepseek", "gemini", "anthropic", "mock"];
export const LIMIT_FIELDS = ["rpm", "rpd", "tpm", "tpd", "concurrency"];

export const LIMIT_LABELS = {
  rpm: "Requests/minute",
  rpd: "Requests/day",
  tpm: "Tokens/minute",
  tpd: "Tokens/day",
  concurrency: "In flight",
};

export const DEFAULT_BASES = {
  openai: "https://api.openai.com/v1",
  deepseek: "https://api.deepseek.com/v1",
  gemini: "https://generativelanguage.googleapis.com/v1beta/openai",
  anthropic: "https://api.anthropic.com/v1",
};

// Real providers take {api_key, api_base?}; mock takes {} exactly.
export function isRemote(provider) {
  return provider !== "mock";
}

// "openai/org/model" -> ["openai", "org/model"] (the id may contain "/").
export function splitModel(model) {
  const text = String(model ?? "");
  const slash = text.indexOf("/");
  return slash < 0 ? [text, ""] : [text.slice(0, slash), text.slice(slash + 1)];
}

// A secret as its last 4 characters; short ones are not shown at all.
export function mask(secret) {
  const text = String(secret ?? "");
  if (!text) return "";
  return text.length >= 8 ? `••••${text.slice(-4)}` : "••••";
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
