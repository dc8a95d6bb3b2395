// The admin UI: lists models and API keys through the Admin API (CONTRACT 3).
// Plain DOM, no framework; every value is written with textContent, never as HTML.
// An API key's secret value is never read into the page: keys are shown by their ID.

const STORAGE_KEY = "twisted-gw.adminKey";
const API = "/aisix/admin";

const $ = (id) => document.getElementById(id);

function storedKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) || "";
  } catch {
    return ""; // storage disabled: the key lives only in the input
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(STORAGE_KEY, key);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    /* storage disabled */
  }
}

function currentKey() {
  return $("admin-key").value.trim() || storedKey();
}

// "/models/<id>" -> "<id>"
function idOf(entry) {
  return String(entry && entry.key ? entry.key : "").replace(/^\/(?:models|apikeys)\//, "");
}

class ApiError extends Error {}

async function fetchList(segment, key) {
  let response;
  try {
    response = await fetch(`${API}/${segment}`, {
      headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(`Could not reach the Admin API: ${err.message}`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null; // e.g. the empty body of a 404
  }
  if (!response.ok) {
    const msg = body && typeof body.error_msg === "string" ? body.error_msg : "";
    throw new ApiError(
      msg ? `${msg} (HTTP ${response.status})` : `HTTP ${response.status} ${response.statusText}`.trim(),
    );
  }
  if (!body || !Array.isArray(body.list)) {
    throw new ApiError("Unexpected response: no list in the body");
  }
  return body.list;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function placeholder(tbody, columns, text) {
  const row = document.createElement("tr");
  const td = document.createElement("td");
  td.colSpan = columns;
  td.className = "empty";
  td.textContent = text;
  row.appendChild(td);
  tbody.replaceChildren(row);
}

const VIEWS = {
  models: {
    label: "models",
    columns: 3,
    row(entry, tr) {
      const v = entry.value || {};
      cell(tr, String(v.name ?? ""));
      cell(tr, String(v.model ?? ""));
      cell(tr, idOf(entry), "id");
    },
  },
  apikeys: {
    label: "API keys",
    columns: 2,
    row(entry, tr) {
      // Only the ID and allowed_models: the key itself is a secret.
      const allowed = entry.value && Array.isArray(entry.value.allowed_models)
        ? entry.value.allowed_models : [];
      cell(tr, idOf(entry), "id");
      cell(tr, allowed.length ? allowed.join(", ") : "none (no access)");
    },
  },
};

async function load(segment) {
  const view = VIEWS[segment];
  const table = $(`${segment}-table`);
  const tbody = table.tBodies[0];
  const error = $(`${segment}-error`);
  const key = currentKey();
  error.hidden = true;
  error.textContent = "";
  if (!key) {
    placeholder(tbody, view.columns, "Enter the admin key to load.");
    return null;
  }
  table.setAttribute("aria-busy", "true");
  placeholder(tbody, view.columns, "Loading…");
  try {
    const list = await fetchList(segment, key);
    if (list.length === 0) {
      placeholder(tbody, view.columns, `No ${view.label}.`);
    } else {
      const rows = list.map((entry) => {
        const tr = document.createElement("tr");
        view.row(entry, tr);
        return tr;
      });
      tbody.replaceChildren(...rows);
    }
    return list.length;
  } catch (err) {
    placeholder(tbody, view.columns, "Not loaded.");
    error.textContent = err instanceof ApiError ? err.message : `Error: ${err}`;
    error.hidden = false;
    return null;
  } finally {
    table.setAttribute("aria-busy", "false");
  }
}

async function loadAll() {
  const status = $("status");
  if (!currentKey()) {
    status.textContent = "Enter the admin key to load.";
    await Promise.all([load("models"), load("apikeys")]);
    return;
  }
  status.textContent = "Loading…";
  const [models, apikeys] = await Promise.all([load("models"), load("apikeys")]);
  const parts = [];
  if (models !== null) parts.push(`${models} model${models === 1 ? "" : "s"}`);
  if (apikeys !== null) parts.push(`${apikeys} API key${apikeys === 1 ? "" : "s"}`);
  status.textContent = parts.length ? `Loaded ${parts.join(" and ")}.` : "Loading failed.";
}

function start() {
  const input = $("admin-key");
  input.value = storedKey();

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    storeKey(input.value.trim());
    loadAll();
  });
  $("forget-key").addEventListener("click", () => {
    storeKey("");
    input.value = "";
    for (const segment of Object.keys(VIEWS)) {
      placeholder($(`${segment}-table`).tBodies[0], VIEWS[segment].columns, "Not loaded.");
      $(`${segment}-error`).hidden = true;
    }
    $("status").textContent = "Admin key forgotten.";
    input.focus();
  });
  $("reload-models").addEventListener("click", () => load("models"));
  $("reload-apikeys").addEventListener("click", () => load("apikeys"));

  if (input.value) loadAll();
  else input.focus();
}

start(); // module scripts run after the document is parsed
