// The admin UI: a single page under /ui/ (CONTRACT 3). The gateway serves
// index.html for every path that is not a file, so deep links such as
// /ui/models, /ui/providers or /ui/apikeys/create load this app, which then opens that view
// (History API routing). Plain DOM modules, no framework, no build step.

import { ApiError, adminCall } from "./api.js";
import { announce, field, h } from "./dom.js";
import * as apikeys from "./apikeys.js";
import * as models from "./models.js";
import * as overview from "./overview.js";
import * as playground from "./playground.js";
import * as providers from "./providers.js";
import * as spend from "./spend.js";
import { adminKey, forgetAdminKey, setAdminKey } from "./session.js";

const ROUTES = [
  [/^$/, "overview", "Overview", overview.render],
  [/^models$/, "models", "Models", models.renderList],
  [/^models\/create$/, "models", "Add model", models.renderForm],
  [/^models\/(?<id>[^/]+)\/edit$/, "models", "Edit model", models.renderForm],
  [/^providers$/, "providers", "Providers", providers.renderList],
  [/^providers\/create$/, "providers", "Add provider", providers.renderForm],
  [/^providers\/(?<id>[^/]+)\/edit$/, "providers", "Edit provider", providers.renderForm],
  [/^apikeys$/, "apikeys", "API keys", apikeys.renderList],
  [/^apikeys\/create$/, "apikeys", "Add API key", apikeys.renderForm],
  [/^apikeys\/(?<id>[^/]+)\/edit$/, "apikeys", "Edit API key", apikeys.renderForm],
  [/^playground$/, "playground", "Playground", playground.render],
  [/^spend$/, "spend", "Spend", spend.render],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOut = document.getElementById("sign-out");

let current = null; // {controller, cleanup} of the view on screen
let flash = ""; // a message for the next view ("Model x created.")
let loginNotice = ""; // why the login form is shown again

function match(pathname) {
  const rest = decodeURIComponent(pathname.replace(/^\/ui\/?/, "")).replace(/\/+$/, "");
  for (const [pattern, section, title, render] of ROUTES) {
    const m = pattern.exec(rest);
    if (m) return { section, title, render, params: { ...m.groups } };
  }
  return { section: "", title: "Not found", render: notFound, params: {} };
}

function notFound(target) {
  target.append(
    h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Page not found")),
    h("p", {}, "There is no such view. ", h("a", { href: "/ui/" }, "Go to the overview"), "."),
  );
}

export function navigate(path, { replace = false, flash: message = "" } = {}) {
  flash = message;
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  show();
}

function leaveView() {
  if (!current) return;
  current.controller.abort();
  try {
    current.cleanup?.();
  } finally {
    current = null;
  }
}

// Render the view of location.pathname (or the login form), then move the
// focus to its heading so keyboard and screen reader users start there.
function show({ focus = true } = {}) {
  leaveView();
  main.replaceChildren();
  if (!adminKey()) {
    nav.hidden = true;
    signOut.hidden = true;
    renderLogin();
    return;
  }
  nav.hidden = false;
  signOut.hidden = false;
  const route = match(location.pathname);
  for (const link of nav.querySelectorAll("a[data-section]")) {
    if (link.dataset.section === route.section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const controller = new AbortController();
  const ctx = { params: route.params, signal: controller.signal, navigate };
  current = { controller, cleanup: null };
  current.cleanup = route.render(main, ctx) || null;
  document.title = `${route.title} · twisted-gw admin`;
  if (flash) {
    const note = h("p", { class: "flash", role: "status" }, flash);
    (main.querySelector(".view-head") || main.firstChild)?.after(note);
    flash = "";
  }
  if (focus) main.querySelector("h1")?.focus({ preventScroll: false });
}

function renderLogin() {
  document.title = "Sign in · twisted-gw admin";
  const input = h("input", {
    id: "admin-key",
    name: "admin-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const error = h("p", { class: "error", id: "login-error", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: "button primary" }, "Sign in");
  const form = h(
    "form",
    { id: "login-form", class: "card login", novalidate: true, "aria-labelledby": "login-title" },
    h("h1", { id: "login-title", tabindex: "-1" }, "Sign in"),
    h(
      "p",
      {},
      "Enter an admin key (",
      h("code", {}, "deployment.admin.admin_key"),
      " in the gateway's config).",
    ),
    field(
      "Admin key",
      input,
      "Kept in this browser tab only (sessionStorage) until you sign out or close the tab.",
    ),
    error,
    h("div", { class: "actions" }, button),
  );
  if (loginNotice) {
    error.textContent = loginNotice;
    error.hidden = false;
    loginNotice = "";
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      error.textContent = "Enter the admin key.";
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      await adminCall("GET", "/models", undefined, { key }); // checks the key
      setAdminKey(key);
      input.value = "";
      announce("Signed in.");
      show();
    } catch (err) {
      error.textContent =
        err instanceof ApiError && err.status === 401
          ? `The gateway refused this key: ${err.message}.`
          : err.message;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.select();
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  main.append(form);
  input.setAttribute("aria-describedby", `${input.getAttribute("aria-describedby")} login-error`);
  input.focus();
}

// Same-origin links into the app change views without reloading the page.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !/^\/ui(\/|$)/.test(url.pathname)) return;
  event.preventDefault();
  navigate(url.pathname);
});

window.addEventListener("popstate", () => show());

window.addEventListener("admin-unauthorized", (event) => {
  forgetAdminKey();
  loginNotice = `The gateway refused the admin key (${event.detail}). Sign in again.`;
  show();
});

signOut.addEventListener("click", () => {
  forgetAdminKey();
  loginNotice = "";
  show();
  announce("Signed out: the admin key is forgotten.");
});

show({ focus: false });
