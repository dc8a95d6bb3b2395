// Calls to the Admin API (CONTRACT 3) and the proxy-shaped playground.

import { adminKey } from "./session.js";

export const ADMIN = "/aisix/admin";
export const PLAYGROUND = "/playground/chat/completions";

// A refused call: `status` and the server's own text (error_msg, or the
// proxy's error.message) as `message`.
export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// One Admin API call with the session's admin key. Resolves with the JSON
// body; rejects with ApiError (a 401 also fires "admin-unauthorized", so the
// app can ask for the key again).
export async function adminCall(method, path, body, { signal, key } = {}) {
  const headers = { Authorization: `Bearer ${key ?? adminKey()}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit", signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(ADMIN + path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `Could not reach the Admin API (${err.message}).`);
  }
  const payload = await readJson(response);
  if (!response.ok) {
    const message =
      payload && typeof payload.error_msg === "string"
        ? payload.error_msg
        : `HTTP ${response.status} ${response.statusText}`.trim();
    const error = new ApiError(response.status, message, payload);
    if (response.status === 401 && key === undefined) {
      window.dispatchEvent(new CustomEvent("admin-unauthorized", { detail: message }));
    }
    throw error;
  }
  return payload;
}

// "/models/<id>" -> "<id>"
export function idOf(entry) {
  return String(entry?.key ?? "").replace(/^\/(?:models|apikeys|providers)\//, "");
}

// The stored entries of one kind ("models", "apikeys", "providers"): [{key, value}, ...]
export async function listEntries(segment, options) {
  const body = await adminCall("GET", `/${segment}`, undefined, options);
  return Array.isArray(body?.list) ? body.list : [];
}

export const listModels = (options) => listEntries("models", options);
export const listApiKeys = (options) => listEntries("apikeys", options);
export const listProviders = (options) => listEntries("providers", options);

export async function fetchMetrics({ signal } = {}) {
  const response = await fetch("/metrics", { cache: "no-store", credentials: "omit", signal });
  if (!response.ok) throw new ApiError(response.status, `GET /metrics: HTTP ${response.status}`);
  return response.text();
}
