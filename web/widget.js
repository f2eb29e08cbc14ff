// widget.js: the embeddable talk button, <agentkit-widget>. One tag on any page:
//
//   <script type="module" src="https://agent.example/widget.js" data-auto></script>
//
// `data-auto` adds the widget to the page by itself; without it, place
// `<agentkit-widget></agentkit-widget>` where you like. The `server` attribute (default: the server
// this script came from) says which agentkit server to talk to; `caller` (a label) and `caller-token`
// (a caller token from the site's backend: who the visitor is) are passed on to it.
// The site's origin must be on the server's allow-list (AGENTKIT_ALLOWED_ORIGINS), else the widget
// says so and opens no session.

const SCRIPT_URL = import.meta.url;
const DEFAULT_SERVER = new URL(".", SCRIPT_URL).href;

const MESSAGES = {
  not_allowed: "This site is not allowed to use this agent.",
  mic_denied: "Microphone access was denied.",
  no_microphone: "No microphone was found.",
  unsupported: "This browser cannot record audio here.",
  no_connection: "Cannot reach the agent.",
  connection_lost: "The connection was lost.",
  over_capacity: "The agent is busy. Please try again soon.",
  busy: "The agent is busy. Please try again soon.",
  bad_caller_token: "Your sign-in has expired. Please reload the page.",
};
const STATES = {
  idle: "Tap to talk",
  connecting: "Connecting…",
  listening: "Listening",
  thinking: "Thinking…",
  speaking: "Speaking",
};

const STYLE = `
:host { position: fixed; right: 1.25rem; bottom: 1.25rem; z-index: 2147483000;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; }
button { font: inherit; cursor: pointer; }
.fab { width: 3.5rem; height: 3.5rem; border-radius: 50%; border: none; background: #2563eb; color: #fff;
  box-shadow: 0 4px 14px rgba(0,0,0,.25); display: grid; place-items: center; margin-left: auto; }
.fab[aria-pressed="true"] { background: #dc2626; }
.fab:focus-visible, .close:focus-visible { outline: 3px solid #93c5fd; outline-offset: 2px; }
.fab svg { width: 1.5rem; height: 1.5rem; fill: currentColor; }
.panel { width: min(20rem, calc(100vw - 2.5rem)); margin-bottom: .75rem; background: #fff;
  border-radius: .75rem; box-shadow: 0 8px 28px rgba(0,0,0,.2); padding: .75rem .9rem; }
.panel[hidden] { display: none; }
.head { display: flex; justify-content: space-between; align-items: center; font-weight: 600; }
.close { border: none; background: none; font-size: 1.1rem; line-height: 1; padding: .2rem .4rem; }
.state { font-size: .85rem; color: #4b5563; margin: .3rem 0; }
.error { font-size: .85rem; color: #b91c1c; background: #fee2e2; padding: .4rem .5rem; border-radius: .4rem; }
.error[hidden] { display: none; }
ol { list-style: none; margin: .4rem 0 0; padding: 0; max-height: 12rem; overflow-y: auto; font-size: .9rem; }
li { margin: .25rem 0; }
li.user { text-align: right; color: #1d4ed8; }
li.partial { opacity: 0.65; font-style: italic; }
li.tool { font-size: .8rem; color: #6b7280; text-align: center; }
form { display: flex; gap: .4rem; margin-top: .5rem; }
form input { flex: 1; min-width: 0; font: inherit; font-size: .9rem; padding: .35rem .6rem;
  border: 1px solid #d1d5db; border-radius: 999px; }
form button { border: none; border-radius: 999px; background: #2563eb; color: #fff; padding: .35rem .8rem; }
form :disabled { opacity: .5; cursor: default; }
`;

const MIC_ICON =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z"/></svg>';

class AgentkitWidget extends HTMLElement {
  constructor() {
    super();
    this.client = null;
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${STYLE}</style>
      <section class="panel" part="panel" hidden aria-label="Voice assistant">
        <div class="head"><span>Voice assistant</span>
          <button class="close" type="button" aria-label="Close">×</button></div>
        <p class="state" role="status" aria-live="polite" data-state="idle">${STATES.idle}</p>
        <p class="error" role="alert" hidden></p>
        <ol class="transcript" aria-live="polite"></ol>
        <form class="type"><input type="text" maxlength="2000" autocomplete="off" disabled
            placeholder="Or type a message" aria-label="Type a message to the assistant">
          <button type="submit" disabled>Send</button></form>
      </section>
      <button class="fab" part="button" type="button" aria-pressed="false"
        aria-label="Talk to the assistant">${MIC_ICON}</button>`;
    this._panel = root.querySelector(".panel");
    this._state = root.querySelector(".state");
    this._error = root.querySelector(".error");
    this._transcript = root.querySelector(".transcript");
    this._button = root.querySelector(".fab");
    this._form = root.querySelector("form.type");
    this._form.addEventListener("submit", (e) => {
      e.preventDefault(); // Enter in the box, or the button
      const input = this._form.elements[0];
      if (input.value.trim() && this.client?.sendText(input.value)) input.value = "";
    });
    this._button.addEventListener("click", () => this.toggle());
    root.querySelector(".close").addEventListener("click", () => {
      this.stop();
      this._panel.hidden = true;
    });
  }

  get server() {
    return this.getAttribute("server") || DEFAULT_SERVER;
  }

  disconnectedCallback() {
    this.stop();
  }

  /** Start a session if none is running, else end it. */
  toggle() {
    if (this.client || this._loading) this.stop();
    else this.start();
  }

  async start() {
    this._panel.hidden = false;
    this._error.hidden = true;
    this._setRunning(true);
    this._setState("connecting");
    this._loading = true;
    let module;
    try {
      // Loads only if the server lets this site use it (CORS): the first sign of an allow-list refusal.
      module = await import(new URL("agentkit.js", this._base()).href);
    } catch {
      this._loading = false;
      this._fail("not_allowed", `${MESSAGES.not_allowed} (${new URL(this._base()).host})`);
      return;
    }
    if (!this._loading) return; // stopped while loading
    this._loading = false;
    const client = (this.client = module.connect({
      url: this._base(),
      caller: this.getAttribute("caller") || undefined,
      callerToken: this.getAttribute("caller-token") || undefined,
    }));
    client.on("state", ({ state }) => this._setState(state));
    client.on("transcript", ({ role, text, final }) => this._addLine(role, text, final));
    client.on("tool", ({ name, status }) => this._addToolLine(name, status));
    client.on("connected", () => this._setTyping(true));
    client.on("error", ({ code, message }) => this._showError(code, message));
    client.on("disconnected", () => {
      if (this.client === client) this.client = null;
      this._setRunning(false);
      this._setTyping(false);
    });
    this.dispatchEvent(new CustomEvent("agentkit-client", { detail: { client } }));
  }

  stop() {
    this._loading = false;
    if (this.client) this.client.disconnect();
    this.client = null;
    this._setRunning(false);
  }

  _base() {
    const base = new URL(this.server, location.href);
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    return base.href;
  }

  _fail(code, message) {
    this._showError(code, message);
    this._setRunning(false);
    this._setState("idle");
  }

  _showError(code, message) {
    this._error.textContent = MESSAGES[code] && code !== "not_allowed" ? MESSAGES[code] : message || code;
    this._error.dataset.code = code;
    this._error.hidden = false;
  }

  _setState(state) {
    this._state.textContent = STATES[state] || state;
    this._state.dataset.state = state;
  }

  _setRunning(running) {
    this._button.setAttribute("aria-pressed", String(running));
    this._button.setAttribute("aria-label", running ? "Stop talking" : "Talk to the assistant");
  }

  _setTyping(enabled) {
    for (const control of this._form.elements) control.disabled = !enabled;
  }

  _addToolLine(name, status) {
    // "using x…" while the tool runs, then "used x" (or "x failed") in its place
    this._tools ??= new Map();
    const li = this._tools.get(name) ?? document.createElement("li");
    li.className = "tool";
    li.dataset.role = "tool";
    li.textContent = { started: `using ${name}…`, finished: `used ${name}`, failed: `${name} failed` }[status]
      ?? `${name} ${status}`;
    if (!li.isConnected) this._transcript.append(li);
    if (status === "started") this._tools.set(name, li);
    else this._tools.delete(name);
    li.scrollIntoView({ block: "nearest" });
  }

  _addLine(role, text, final = true) {
    // a partial line (final false) is updated in place until its final version arrives
    this._pending ??= {};
    const li = this._pending[role] ?? document.createElement("li");
    li.className = final ? role : `${role} partial`;
    li.dataset.role = role;
    li.textContent = text;
    if (!li.isConnected) this._transcript.append(li);
    this._pending[role] = final ? null : li;
    li.scrollIntoView({ block: "nearest" });
  }
}

if (!customElements.get("agentkit-widget")) customElements.define("agentkit-widget", AgentkitWidget);

// data-auto: add one widget to the page, talking to the server this script came from.
for (const script of document.querySelectorAll("script[data-auto]")) {
  if (script.src && new URL(script.src, location.href).href === SCRIPT_URL) {
    const add = () => {
      if (!document.querySelector("agentkit-widget")) {
        document.body.append(document.createElement("agentkit-widget"));
      }
    };
    if (document.body) add();
    else document.addEventListener("DOMContentLoaded", add, { once: true });
  }
}
