// The Admin API's schema errors as sentences. The Admin API keeps AISIX's
// exact texts (CONTRACT 3: 'JSON schema validation error: property "<json
// pointer>" validation failed: <validator message>'), which name a JSON
// pointer and may quote a regular expression; the forms say instead which
// field is wrong and what it takes. Pure: no DOM, no fetch.

import { LIMIT_LABELS } from "./schema.js";

const PREFIX = "JSON schema validation error: ";
const LINE = /^property "([^"]*)" validation failed: (.*)$/;

// What the forms call a document's fields (their labels), by JSON pointer segment.
const FIELDS = {
  name: "Name",
  model: "Model",
  provider_config: "Provider connection",
  api_key: "API key",
  api_base: "API base URL",
  timeout: "Timeout (ms)",
  rate_limit: "Rate limits",
  key: "Key",
  allowed_models: "Allowed models",
  provider_id: "Provider",
  type: "Type",
  config: "Settings",
  weight: "Weight",
  priority: "Priority",
  targets: "Deployments",
  routing: "Routing",
  strategy: "Strategy",
  retries: "Retries",
  retry_on: "Retry on",
  cooldown: "Cooldown",
  fallbacks: "Fallbacks",
};
const COOLDOWN = { failures: "Failures", window_ms: "Window (ms)", duration_ms: "Duration (ms)" };
// the JSON Schema types, as the sentence names what a field takes
const TYPES = {
  integer: "a whole number",
  number: "a number",
  string: "text",
  array: "a list",
  object: "a group of fields",
  boolean: "true or false",
  null: "empty",
};

function humanize(segment) {
  const words = String(segment)
    .split("_")
    .map((w) => (w === "api" ? "API" : w === "id" ? "ID" : w));
  if (words.at(-1) === "base") words.push("URL");
  const text = words.join(" ");
  return text ? text[0].toUpperCase() + text.slice(1) : "";
}

function segments(pointer) {
  return String(pointer)
    .split("/")
    .slice(1)
    .filter((s) => s !== "")
    .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
}

const ordinal = (index) => Number(index) + 1;

// The field a JSON pointer names, as the form labels it: "/rate_limit/rpm" ->
// "Requests/minute (rpm)", "/targets/0/weight" -> "Deployment 1: Weight"
// (deployment 0 is the model's own upstream), "/" -> "The document".
export function fieldLabel(pointer) {
  const path = segments(pointer);
  if (!path.length) return "The document";
  const [head, ...rest] = path;
  if (head === "rate_limit" && rest.length === 1) {
    const kind = rest[0];
    return LIMIT_LABELS[kind] ? `${LIMIT_LABELS[kind]} (${kind})` : `Rate limit ${kind}`;
  }
  if (head === "targets" && rest.length) {
    const deployment = `Deployment ${ordinal(rest[0])}`;
    return rest.length > 1 ? `${deployment}: ${fieldLabel(`/${rest.slice(1).join("/")}`)}` : deployment;
  }
  if (head === "routing" && rest[0] === "cooldown" && rest.length === 2) {
    return `Cooldown ${(COOLDOWN[rest[1]] || humanize(rest[1])).toLowerCase()}`;
  }
  if (head === "routing" && rest[0] === "retry_on" && rest.length === 2) {
    return `Retry on, item ${ordinal(rest[1])}`;
  }
  if (head === "routing" && rest.length) return fieldLabel(`/${rest.join("/")}`);
  if ((head === "fallbacks" || head === "allowed_models") && rest.length === 1) {
    return `${head === "fallbacks" ? "Fallback" : "Allowed model"} ${ordinal(rest[0])}`;
  }
  if (head === "provider_config" && rest.length === 1) {
    return rest[0] === "api_key" ? "Provider API key" : FIELDS[rest[0]] || humanize(rest[0]);
  }
  if (head === "config" && rest.length === 1) return FIELDS[rest[0]] || humanize(rest[0]);
  return FIELDS[path.at(-1)] || humanize(path.at(-1));
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function number(text) {
  const n = Number(text);
  return Number.isFinite(n) ? n.toLocaleString("en-US") : text;
}

function oneOf(values) {
  return values.map((v) => (typeof v === "string" ? v : JSON.stringify(v))).join(", ");
}

const quoted = (names) => names.map((n) => `“${n}”`).join(", ");

// One validator message about the field at `pointer`, as a sentence.
function sentence(pointer, message) {
  const label = fieldLabel(pointer);
  let m = /^"((?:[^"\\]|\\.)*)" is a required property$/.exec(message);
  if (m) {
    const child = parseJson(`"${m[1]}"`);
    const base = pointer === "/" ? "" : pointer;
    return `${fieldLabel(`${base}/${child}`)} is required.`;
  }
  m = /^(.*) is not of type (.+)$/.exec(message);
  if (m) {
    const types = [parseJson(m[2])].flat().map((t) => TYPES[t] || t);
    return `${label} must be ${types.join(" or ")}.`;
  }
  m = /^Additional properties are not allowed \((.*) (?:was|were) unexpected\)$/.exec(message);
  if (m) {
    const names = [...m[1].matchAll(/'((?:[^'\\]|\\.)*)'/g)].map((x) => x[1]);
    const what = pointer === "/" ? "This document" : label;
    return names.length === 1
      ? `${what} has no field ${quoted(names)}: remove it.`
      : `${what} has no fields ${quoted(names)}: remove them.`;
  }
  m = /^(.*) is less than the minimum of (\S+)$/.exec(message);
  if (m) return `${label} must be at least ${number(m[2])}.`;
  m = /^(.*) is greater than the maximum of (\S+)$/.exec(message);
  if (m) return `${label} must be at most ${number(m[2])}.`;
  m = /^(.*) is shorter than (\d+) characters?$/.exec(message);
  if (m) {
    return m[2] === "1"
      ? `${label} cannot be empty.`
      : `${label} must be at least ${m[2]} characters long.`;
  }
  m = /^(.*) does not match (".*")$/.exec(message);
  if (m) {
    // the model pattern: "^(openai|deepseek|...)/.+$"
    const families = /^\^\(([\w|-]+)\)\/\.\+\$$/.exec(parseJson(m[2]));
    const value = parseJson(m[1]);
    if (families && families[1].split("|").some((f) => value === `${f}/`)) {
      const upstream = label.replace(/Model$/, "Upstream model");
      return `${upstream} cannot be empty: “${value}” needs the model's id after the /.`;
    }
    if (families) {
      return (
        `${label} must be a provider and the upstream model's id, as provider/model-id, ` +
        `with a provider among ${families[1].split("|").join(", ")}.`
      );
    }
    return `${label} is not in the form the gateway takes.`;
  }
  m = /^(.*) is not one of (\[.*\])$/.exec(message);
  if (m) {
    const values = parseJson(m[2]);
    return `${label} must be one of ${Array.isArray(values) ? oneOf(values) : m[2]}.`;
  }
  m = /^(\d+) is a client error, which is never retried$/.exec(message);
  if (m) return `${label}: ${m[1]} is the client's own mistake, which is never retried.`;
  return `${label}: ${message}`;
}

// The sentences for an Admin API error text, one per field it names, or null
// when it is not a schema error (e.g. "Model name already exists", which
// already reads as one).
export function schemaSentences(text) {
  const message = String(text ?? "");
  if (!message.startsWith(PREFIX)) return null;
  const lines = message.slice(PREFIX.length).split("\n");
  const sentences = [];
  let pending = null; // a message that went on over more than one line
  for (const line of lines) {
    const m = LINE.exec(line);
    if (m) {
      if (pending) sentences.push(sentence(...pending));
      pending = [m[1], m[2]];
    } else if (pending) {
      pending[1] += `\n${line}`;
    }
  }
  if (pending) sentences.push(sentence(...pending));
  return sentences.length ? sentences : null;
}
