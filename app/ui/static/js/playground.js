// The playground: pick a model, write messages, watch the answer and each agent step stream in.

import { ApiError, readError, session, userApi, userFetch } from "./api.js";
import { errorBox, field, h, pretty, safeLink } from "./dom.js";
import { sseData } from "./sse.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";

const EXAMPLE_TOOLS = `[
  {"type": "function", "function": {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
  }}
]`;

export function playgroundPage(main) {
  if (session.user === null) {
    main.append(h("h1", {}, "Playground"), h("p", { class: "muted" }, "The playground sends requests with an API key: sign out and sign in with one."));
    return;
  }
  const state = { messages: [], running: null };
  const model = h("select", { id: "pg-model", "aria-label": "Model" });
  const system = h("textarea", { id: "pg-system", rows: 2, placeholder: "System prompt (optional)" });
  const tools = h("textarea", { id: "pg-tools", rows: 6, spellcheck: "false", placeholder: EXAMPLE_TOOLS });
  const input = h("textarea", { id: "pg-input", rows: 3, placeholder: "Write a message…" });
  const transcript = h("div", { id: "pg-transcript", class: "transcript" });
  const status = h("div", { id: "pg-status", class: "muted" });
  const send = h("button", { id: "pg-send", type: "submit" }, "Send");
  const stop = h("button", { id: "pg-stop", type: "button", class: "secondary", disabled: true }, "Stop");
  const reset = h("button", { id: "pg-reset", type: "button", class: "secondary" }, "New chat");
  const curl = h("pre", { id: "pg-curl", class: "code" });
  const python = h("pre", { id: "pg-python", class: "code" });

  const form = h(
    "form",
    { class: "composer", onsubmit: (event) => (event.preventDefault(), submit()) },
    input,
    h("div", { class: "row" }, send, stop, reset, status),
  );
  main.append(
    h(
      "div",
      { class: "playground" },
      h(
        "section",
        { class: "chat" },
        h("div", { class: "row" }, field("Model", model)),
        h("details", { class: "settings" }, h("summary", {}, "System prompt and functions"), field("System", system), field("Functions (JSON list of tools, answered by hand)", tools)),
        transcript,
        form,
      ),
      h(
        "aside",
        { class: "request" },
        h("h2", {}, "Request"),
        h("details", { open: true }, h("summary", {}, "curl"), curl),
        h("details", { open: true }, h("summary", {}, "OpenAI Python"), python),
      ),
    ),
  );

  loadModels(model, main);
  stop.addEventListener("click", () => state.running && state.running.abort());
  reset.addEventListener("click", () => {
    state.messages = [];
    transcript.replaceChildren();
    status.textContent = "";
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) submit();
  });

  function submit() {
    const text = input.value.trim();
    if (!text || state.running) return;
    input.value = "";
    state.messages.push({ role: "user", content: text });
    transcript.append(messageView("user", text));
    run();
  }

  async function run() {
    let declared = null;
    if (tools.value.trim()) {
      try {
        declared = JSON.parse(tools.value);
        if (!Array.isArray(declared)) throw new Error("a JSON list");
      } catch (err) {
        transcript.append(errorBox(new Error("Functions must be a JSON list of tools: " + err.message)));
        return;
      }
    }
    const messages = system.value.trim() ? [{ role: "system", content: system.value.trim() }, ...state.messages] : [...state.messages];
    const body = { model: model.value, messages, stream: true, stream_options: { include_usage: true } };
    if (declared && declared.length) body.tools = declared;
    curl.textContent = curlSnippet(location.origin, body);
    python.textContent = pythonSnippet(location.origin, body);

    const turn = new TurnView();
    transcript.append(turn.root);
    const controller = new AbortController();
    state.running = controller;
    send.disabled = true;
    stop.disabled = false;
    status.textContent = "Running…";
    const started = performance.now();
    try {
      const response = await userFetch("/v1/chat/completions", { method: "POST", body, signal: controller.signal });
      if (!response.ok) throw await readError(response);
      for await (const data of sseData(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(0, chunk.error.message || "The stream ended with an error.", chunk);
        turn.chunk(chunk, performance.now() - started);
      }
      turn.finish(performance.now() - started);
      const message = turn.message();
      state.messages.push(message);
      if (message.tool_calls && message.tool_calls.length) turn.root.append(answerForm(message.tool_calls));
      status.textContent = "Done";
    } catch (err) {
      status.textContent = err.name === "AbortError" ? "Stopped" : "Failed";
      turn.root.append(errorBox(err.name === "AbortError" ? new Error("Stopped.") : err));
      turn.finish(performance.now() - started);
    } finally {
      state.running = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  function answerForm(calls) {
    const answers = calls.map((call) => {
      const box = h("textarea", { class: "call-result", rows: 2, "data-call-id": call.id, placeholder: "The function's result (any text or JSON)" });
      return { call, box };
    });
    const formEl = h(
      "form",
      {
        class: "card answer-calls",
        onsubmit: (event) => {
          event.preventDefault();
          for (const { call, box } of answers) state.messages.push({ role: "tool", tool_call_id: call.id, content: box.value });
          formEl.replaceWith(h("p", { class: "muted" }, `Sent ${answers.length} function result(s).`));
          run();
        },
      },
      h("h3", {}, "The model called your functions: answer by hand"),
      answers.map(({ call, box }) =>
        h("div", { class: "call" }, h("code", { class: "call-name" }, call.function.name), h("pre", { class: "code call-args" }, call.function.arguments), box),
      ),
      h("button", { type: "submit", class: "send-results" }, "Send results"),
    );
    return formEl;
  }
}

async function loadModels(select, main) {
  try {
    const listing = await userApi("/v1/models");
    const ids = listing.data.map((m) => m.id);
    const plain = ids.filter((id) => !id.startsWith("agent/"));
    const agents = ids.filter((id) => id.startsWith("agent/"));
    select.replaceChildren(
      h("optgroup", { label: "Agent (tools run by toolrelay)" }, agents.map((id) => h("option", { value: id }, id))),
      h("optgroup", { label: "Models" }, plain.map((id) => h("option", { value: id }, id))),
    );
    if (agents.length) select.value = agents[0];
  } catch (err) {
    main.prepend(errorBox(err));
  }
}

function messageView(role, text) {
  return h("div", { class: `msg ${role}` }, h("div", { class: "role" }, role), h("div", { class: "content" }, text));
}

/** One assistant turn being streamed: content, steps, client tool calls, citations, usage. */
class TurnView {
  constructor() {
    this.content = h("div", { class: "content answer" });
    this.steps = h("div", { class: "steps" });
    this.meta = h("div", { class: "meta muted" });
    this.citations = h("ol", { class: "citations" });
    this.root = h("div", { class: "msg assistant streaming" }, h("div", { class: "role" }, "assistant"), this.steps, this.content, this.citations, this.meta);
    this.text = "";
    this.calls = [];
    this.stepViews = new Map();
    this.firstToken = null;
    this.usage = null;
    this.finishReason = null;
  }

  chunk(chunk, elapsed) {
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      if (typeof delta.content === "string" && delta.content) {
        if (this.firstToken === null) this.firstToken = elapsed;
        this.text += delta.content;
        this.content.textContent = this.text;
      }
      for (const record of delta.agent_steps_delta || []) this.step(record);
      for (const part of delta.tool_calls || []) this.toolCall(part);
      if (Array.isArray(delta.annotations)) this.cite(delta.annotations);
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
    }
  }

  step(record) {
    if (record.type === "tool_call") {
      const view = new StepView(record);
      this.stepViews.set(record.call_id, view);
      this.steps.append(view.root);
    } else if (record.type === "tool_result") {
      let view = this.stepViews.get(record.call_id);
      if (!view) {
        view = new StepView(record);
        this.stepViews.set(record.call_id, view);
        this.steps.append(view.root);
      }
      view.result(record);
    } else {
      this.steps.append(h("div", { class: "step note" }, `${record.type}: ${record.message || record.limit || ""}`));
    }
  }

  toolCall(part) {
    const index = part.index || 0;
    const call = (this.calls[index] ||= { id: "", type: "function", function: { name: "", arguments: "" } });
    if (part.id) call.id = part.id;
    if (part.function && part.function.name) call.function.name += part.function.name;
    if (part.function && part.function.arguments) call.function.arguments += part.function.arguments;
  }

  cite(annotations) {
    for (const note of annotations) {
      const cite = note.url_citation || note;
      if (cite && cite.url) this.citations.append(h("li", {}, safeLink(cite.url, cite.title || cite.url)));
    }
  }

  finish(elapsed) {
    this.root.classList.remove("streaming");
    const parts = [`${(elapsed / 1000).toFixed(2)} s`];
    if (this.firstToken !== null) parts.push(`first token ${(this.firstToken / 1000).toFixed(2)} s`);
    if (this.usage) parts.push(`${this.usage.prompt_tokens} prompt + ${this.usage.completion_tokens} completion tokens`);
    if (this.finishReason) parts.push(`finish: ${this.finishReason}`);
    this.meta.textContent = parts.join(" · ");
    for (const view of this.stepViews.values()) view.settle();
  }

  message() {
    const calls = this.calls.filter(Boolean);
    const message = { role: "assistant", content: this.text || null };
    if (calls.length) message.tool_calls = calls;
    return message;
  }
}

/** One built-in tool call: open while it runs, with its arguments, then its result. */
class StepView {
  constructor(record) {
    this.started = performance.now();
    this.status = h("span", { class: "badge running" }, "running");
    this.duration = h("span", { class: "muted" });
    this.body = h("div", { class: "step-body" });
    this.root = h(
      "details",
      { class: "step", open: true, "data-tool": record.tool || "" },
      h("summary", {}, h("code", { class: "tool" }, record.tool || "tool"), " ", this.status, " ", this.duration),
      this.body,
    );
    if (record.arguments !== undefined) this.body.append(argumentsView(record.tool, record.arguments));
  }

  result(record) {
    this.status.textContent = record.status || "done";
    this.status.className = "badge " + (record.status === "ok" ? "ok" : "failed");
    if (typeof record.duration_ms === "number") this.duration.textContent = `${(record.duration_ms / 1000).toFixed(2)} s`;
    const parts = [h("h4", {}, "Result")];
    if (record.summary) parts.push(h("pre", { class: "code output" }, record.summary + (record.truncated ? "\n…" : "")));
    if (Array.isArray(record.sources) && record.sources.length)
      parts.push(h("ul", { class: "sources" }, record.sources.map((src) => h("li", {}, safeLink(src.url, src.title || src.url)))));
    if (record.data && typeof record.data === "object" && Object.keys(record.data).length) parts.push(h("pre", { class: "code data" }, pretty(record.data)));
    this.body.append(h("div", { class: "step-result" }, parts));
    this.done = true;
  }

  settle() {
    if (!this.done) {
      this.status.textContent = "no result";
      this.status.className = "badge failed";
    }
  }
}

function argumentsView(tool, args) {
  if (tool === "python" && args && typeof args.code === "string") {
    return h("div", {}, h("h4", {}, "Code"), h("pre", { class: "code python" }, args.code));
  }
  return h("div", {}, h("h4", {}, "Arguments"), h("pre", { class: "code args" }, pretty(args)));
}
