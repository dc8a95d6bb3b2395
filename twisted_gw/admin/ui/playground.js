// Playground: a chat through POST /playground/chat/completions, which is the
// proxy's chat endpoint run with the API key picked here (its allowed models,
// rate limits, metrics and access log all apply). Streams are read as they
// arrive; Stop aborts the fetch, which closes the connection, and the gateway
// then cancels the upstream request (CONTRACT 4.3).

import { PLAYGROUND, idOf, listApiKeys, listModels } from "./api.js";
import { announce, field, formatNumber, h } from "./dom.js";
import { mask } from "./schema.js";
import { readEvents } from "./sse.js";

// The conversation outlives a visit to another view (not a reload).
const state = { keyId: "", model: "", messages: [], stream: true };

// Lets "Try it in the playground" after creating a key preselect it.
export function preferKey(id) {
  state.keyId = id;
  state.model = "";
}

// The model names of `models` this key may use.
function usableModels(entry, models) {
  const allowed = entry?.value?.allowed_models;
  return Array.isArray(allowed) ? allowed.map(String).filter((n) => models.has(n)) : [];
}

function keyLabel(entry, models) {
  const label = `${mask(entry.value?.key)} (ID ${idOf(entry).slice(0, 8)})`;
  return usableModels(entry, models).length ? label : `${label}, no usable model`;
}

// The key to start with: the one picked before (here or by "Try it in the
// playground") if it still exists, else the first that may use a model, so
// the playground is ready to send; a key that may use none only if no key can.
function initialKey(keys, models, preferred) {
  return (
    keys.find((k) => idOf(k) === preferred) ||
    keys.find((k) => usableModels(k, models).length) ||
    keys[0] ||
    null
  );
}

function bubble(role, name, text, note) {
  return h(
    "div",
    { class: `msg msg-${role}` },
    h("div", { class: "who" }, name),
    h("div", { class: "text" }, text),
    note ? h("div", { class: "meta" }, note) : null,
  );
}

function ms(value) {
  return `${formatNumber(value)} ms`;
}

export function render(main, { signal }) {
  const keySelect = h(
    "select",
    { id: "pg-key", name: "key" },
    h("option", { value: "" }, "Loading…"),
  );
  const modelSelect = h("select", { id: "pg-model", name: "model" });
  const stream = h("input", { type: "checkbox", id: "pg-stream", checked: state.stream });
  const system = h("textarea", { id: "pg-system", rows: "2", spellcheck: "true" });
  const maxTokens = h("input", {
    id: "pg-max-tokens",
    type: "number",
    min: "1",
    step: "1",
    inputmode: "numeric",
  });
  const temperature = h("input", {
    id: "pg-temperature",
    type: "number",
    min: "0",
    max: "2",
    step: "0.1",
    inputmode: "decimal",
  });
  const input = h("textarea", {
    id: "pg-input",
    rows: "3",
    required: true,
    placeholder: "Say hello…",
  });
  const transcript = h("div", {
    id: "pg-transcript",
    class: "transcript",
    role: "log",
    "aria-label": "Conversation",
    "aria-live": "polite",
    tabindex: "0",
  });
  const send = h("button", { type: "submit", class: "button primary", id: "pg-send" }, "Send");
  const stop = h(
    "button",
    { type: "button", class: "button danger", id: "pg-stop", disabled: true },
    "Stop",
  );
  const clear = h(
    "button",
    { type: "button", class: "button", id: "pg-clear" },
    "Clear conversation",
  );
  const stats = h("p", { id: "pg-stats", role: "status", class: "stats-line" });
  const error = h("p", { id: "pg-error", class: "error", role: "alert", hidden: true });
  const empty = h("p", { class: "empty", id: "pg-empty" }, "No messages yet.");

  main.append(
    h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, "Playground")),
    h(
      "p",
      { class: "help" },
      "Runs through ",
      h("code", {}, "POST /playground/chat/completions"),
      ": the proxy's chat endpoint with the key you pick, so its allowed models, rate limits and logs apply.",
    ),
  );
  const form = h(
    "form",
    { id: "pg-form", class: "playground", novalidate: true, "aria-label": "Chat" },
    h(
      "div",
      { class: "pg-settings" },
      field("API key", keySelect),
      field("Model", modelSelect, " "),
      h("div", { class: "choice" }, stream, h("label", { for: "pg-stream" }, "Stream the answer")),
      h(
        "details",
        { class: "options" },
        h("summary", {}, "Options"),
        field("System prompt", system),
        field("Max tokens", maxTokens),
        field("Temperature", temperature),
      ),
    ),
    h(
      "section",
      { class: "pg-chat", "aria-label": "Chat" },
      transcript,
      field("Message", input, "Ctrl+Enter (⌘+Enter) sends, Escape stops."),
      h("div", { class: "actions" }, send, stop, clear),
      stats,
      error,
    ),
  );
  main.append(form);
  const modelHelp = form.querySelector("#pg-model-help");

  let keys = [];
  let modelNames = new Set();
  let running = null; // the AbortController of the request in flight

  function redrawTranscript() {
    transcript.replaceChildren(
      ...(state.messages.length
        ? state.messages.map((m) =>
            bubble(m.role, m.role === "user" ? "You" : m.model, m.content, m.note),
          )
        : [empty]),
    );
  }
  redrawTranscript();

  function selectedKey() {
    return keys.find((k) => idOf(k) === keySelect.value) || null;
  }

  function fillModels() {
    const key = selectedKey();
    const usable = usableModels(key, modelNames);
    modelSelect.replaceChildren(
      ...usable.map((n) => h("option", { value: n, selected: n === state.model }, n)),
    );
    if (!key) modelHelp.textContent = "Add an API key first.";
    else if (!usable.length) modelHelp.textContent = "This key allows no configured model.";
    else modelHelp.textContent = `The models this key may use (${usable.length}).`;
    modelSelect.disabled = !usable.length;
    state.model = modelSelect.value;
    updateButtons();
  }

  function updateButtons() {
    send.disabled = running !== null || !modelSelect.value;
    stop.disabled = running === null;
    keySelect.disabled = running !== null;
  }

  keySelect.addEventListener("change", () => {
    state.keyId = keySelect.value;
    fillModels();
  });
  modelSelect.addEventListener("change", () => {
    state.model = modelSelect.value;
  });
  stream.addEventListener("change", () => {
    state.stream = stream.checked;
  });
  stop.addEventListener("click", () => running?.abort());
  clear.addEventListener("click", () => {
    running?.abort();
    state.messages = [];
    stats.textContent = "";
    error.hidden = true;
    redrawTranscript();
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape" && running) {
      event.preventDefault();
      running.abort();
    }
  });

  Promise.all([listApiKeys({ signal }), listModels({ signal })])
    .then(([keyList, models]) => {
      if (signal.aborted) return;
      keys = keyList;
      modelNames = new Set(models.map((m) => String(m.value?.name ?? "")));
      const first = initialKey(keys, modelNames, state.keyId);
      keySelect.replaceChildren(
        ...keys.map((k) =>
          h("option", { value: idOf(k), selected: k === first }, keyLabel(k, modelNames)),
        ),
      );
      keySelect.disabled = !keys.length;
      state.keyId = keySelect.value;
      fillModels();
    })
    .catch((err) => {
      if (err.name === "AbortError") return;
      error.textContent = err.message;
      error.hidden = false;
    });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (running || !input.value.trim() || !modelSelect.value) {
      if (!input.value.trim()) input.focus();
      return;
    }
    chat(input.value);
  });

  async function chat(text) {
    const key = selectedKey();
    const model = modelSelect.value;
    error.hidden = true;
    stats.textContent = "";
    input.value = "";
    const user = { role: "user", content: text };
    const messages = [...state.messages, user].map(({ role, content }) => ({ role, content }));
    if (system.value.trim()) messages.unshift({ role: "system", content: system.value.trim() });
    const body = { model, messages, stream: stream.checked };
    if (maxTokens.value) body.max_tokens = Number(maxTokens.value);
    if (temperature.value) body.temperature = Number(temperature.value);

    state.messages.push(user);
    redrawTranscript();
    const answer = bubble("assistant", model, "");
    answer.id = "pg-answer";
    answer.classList.add("streaming");
    const answerText = answer.querySelector(".text");
    transcript.append(answer);
    transcript.setAttribute("aria-busy", "true");

    const controller = new AbortController();
    running = controller;
    updateButtons();
    const started = performance.now();
    let firstToken = null;
    let content = "";
    let usage = null;
    let outcome = "done";
    let response = null;
    let reading = false; // the answer's body is being read: a failure now is a cut stream
    const onContent = (piece) => {
      if (!piece) return;
      if (firstToken === null) firstToken = performance.now() - started;
      content += piece;
      answerText.textContent = content;
      transcript.scrollTop = transcript.scrollHeight;
    };
    try {
      response = await fetch(PLAYGROUND, {
        method: "POST",
        headers: { Authorization: `Bearer ${key.value.key}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        signal: controller.signal,
      });
      if (!response.ok) {
        const payload = await response.json().catch(() => null);
        const e = payload?.error;
        const retry = response.headers.get("retry-after");
        throw Object.assign(new Error(e?.message || `HTTP ${response.status}`), {
          detail: `${response.status}${e?.code ? ` ${e.code}` : ""}${retry ? ` · retry after ${retry} s` : ""}`,
        });
      }
      reading = true;
      if ((response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        let events = 0;
        const { done } = await readEvents(response, (data) => {
          events += 1;
          const chunk = JSON.parse(data);
          if (chunk.usage) usage = chunk.usage;
          for (const choice of chunk.choices || []) onContent(choice.delta?.content);
        });
        if (!done) outcome = events ? "cut" : "empty";
      } else {
        const result = await response.json();
        usage = result.usage || null;
        onContent(result.choices?.[0]?.message?.content ?? "");
      }
    } catch (err) {
      if (err.name === "AbortError") {
        outcome = "stopped";
      } else if (reading && content) {
        outcome = "cut";
      } else {
        outcome = "error";
        error.textContent = err.detail
          ? `${err.message} (${err.detail})`
          : `Request failed: ${err.message}`;
        error.hidden = false;
      }
    } finally {
      running = null;
      transcript.removeAttribute("aria-busy");
      answer.classList.remove("streaming");
      updateButtons();
    }

    const total = performance.now() - started;
    if (outcome === "error") {
      answer.remove();
      state.messages.pop(); // the question was not answered: let it be asked again
      input.value = text;
      redrawTranscript();
      input.focus();
      return;
    }
    const notes = {
      stopped: "Stopped; the gateway cancelled the upstream request.",
      cut: "The stream ended without [DONE]: it was cut (upstream lost or timed out).",
      empty: "The upstream sent no chunks.",
    };
    const note = notes[outcome];
    state.messages.push({ role: "assistant", content, model, note });
    const parts = [];
    if (note) {
      parts.push(note);
      answer.append(h("div", { class: "meta" }, note));
    }
    if (usage) {
      parts.push(
        `Usage: ${formatNumber(usage.prompt_tokens)} prompt + ${formatNumber(usage.completion_tokens)} completion = ${formatNumber(usage.total_tokens)} tokens.`,
      );
    }
    parts.push(
      `Latency: ${firstToken !== null && stream.checked ? `first token ${ms(firstToken)}, ` : ""}total ${ms(total)}.`,
    );
    const rid = response?.headers.get("x-request-id");
    const left = response?.headers.get("x-ratelimit-remaining-requests");
    if (left !== null && left !== undefined) parts.push(`Requests left this window: ${left}.`);
    if (rid) parts.push(`Request ID ${rid}.`);
    stats.textContent = parts.join(" ");
    stats.dataset.outcome = outcome;
    announce(outcome === "done" ? "Answer complete." : notes[outcome]);
    input.focus();
  }

  return () => running?.abort();
}
