// agentkit.js: talk to an agentkit server from a web page. A dependency-free ES module.
//
//   import { connect } from "https://agent.example/agentkit.js";
//   const client = connect({ url: "https://agent.example" });
//   client.on("transcript", ({ role, text }) => console.log(role, text));
//   client.on("error", ({ code, message }) => console.warn(code, message));
//   ... later: client.disconnect();
//
// Transports (`connect({transport})`, default "auto"):
//   webrtc     an RTCPeerConnection (docs/webrtc.md): the microphone track and the reply as Opus,
//              JSON events on a data channel "events" the client opens; offer via `<url>/webrtc/offer`.
//   websocket  the WebSocket protocol (docs/websocket-protocol.md): 16-bit PCM both ways, JSON events.
//   auto       WebRTC first; if the offer fails or the peer is not connected within
//              `webrtcTimeoutMs`, the WebSocket (a `fallback` event says so).
// `url` is the server's base URL (http/https; the WebSocket is `<url>/ws`) or the WebSocket URL
// itself (ws/wss). Everything above the `_transport*` methods is transport-neutral.
//
// Events (`client.on(name, fn)`; `fn` gets one object):
//   connecting   {}
//   connected    {sessionId, inputSampleRate, outputSampleRate, transport}
//   fallback     {from: "webrtc", to: "websocket", reason}: "auto" gave up on WebRTC
//   state        {state}: "connecting" | "listening" | "thinking" | "speaking" | "idle"
//   transcript   {role: "user" | "assistant", text, interrupted, final}: a partial one (final false)
//                is replaced by the next transcript of the same role
//   metrics      {turnIndex, metrics}   (voice_to_voice_ms, stt_ms, llm_ttft_ms, tts_ttfa_ms, ...)
//   tool         {name, status, durationMs}: the agent used a tool; status "started", then
//                "finished" | "failed" | "cancelled" (durationMs set then)
//   interrupted  {heardMs}
//   error        {code, message, fatal}: mic_denied, no_microphone, unsupported, no_connection,
//                connection_lost, over_capacity, busy, or any server error code
//   disconnected {code, reason}
//   message      {message}: every JSON message from the server, as received
//
// `client.sendText(text)` sends a typed message: a turn like a spoken one (it interrupts a reply
// in progress), answered aloud; its transcript comes back as the caller's line. At most
// MAX_TEXT_CHARS characters, no control characters but newline and tab (else a `bad_text` error).

export const VERSION = "0.1.0";

const FRAME_MS = 20;
const CAPTURE_RATE = 16000;
const MAX_WIRE_RATE = 48000;
const PLAYBACK_LEAD_S = 0.05; // a small jitter margin before the first chunk of a reply plays
const TRANSPORTS = ["auto", "webrtc", "websocket"];
const WEBRTC_RATE = 48000; // Opus, both ways
const WEBRTC_TIMEOUT_MS = 5000; // offer posted to peer "connected", before "auto" falls back
const ICE_GATHERING_TIMEOUT_MS = 3000; // then the offer goes with the candidates gathered so far
const METER_MS = 20; // how often the WebRTC output level is read
const AUDIBLE_RMS = 0.01; // -40 dBFS: output above it counts as played audio (WebRTC path)
const STATS_POLL_MS = 1000; // how often `samplesReceived` is read from the receiver (WebRTC path)
export const MAX_TEXT_CHARS = 2000; // the longest typed message the server takes

// The capture worklet: cuts the microphone into 20 ms frames of 16-bit PCM at the context's rate.
const CAPTURE_WORKLET = `
class AgentkitCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.frameSamples;
    this.frame = new Int16Array(this.size);
    this.filled = 0;
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const s = Math.max(-1, Math.min(1, channel[i]));
      this.frame[this.filled++] = s < 0 ? s * 32768 : s * 32767;
      if (this.filled === this.size) {
        this.port.postMessage(this.frame.buffer, [this.frame.buffer]); // transferred: detached here
        this.frame = new Int16Array(this.size);
        this.filled = 0;
      }
    }
    return true;
  }
}
registerProcessor("agentkit-capture", AgentkitCapture);
`;

function websocketUrl(url) {
  const u = new URL(url, globalThis.location ? globalThis.location.href : undefined);
  if (u.protocol === "ws:" || u.protocol === "wss:") return u.href;
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.pathname = u.pathname.replace(/\/?$/, "/ws");
  u.search = "";
  u.hash = "";
  return u.href;
}

/** The server's HTTP base URL (ending in "/"), from a base URL or a `.../ws` WebSocket URL. */
function httpBase(url) {
  const u = new URL(url, globalThis.location ? globalThis.location.href : undefined);
  if (u.protocol === "ws:" || u.protocol === "wss:") {
    u.protocol = u.protocol === "wss:" ? "https:" : "http:";
    u.pathname = u.pathname.replace(/\/ws\/?$/, "/");
  }
  u.pathname = u.pathname.replace(/\/?$/, "/");
  u.search = "";
  u.hash = "";
  return u.href;
}

/** Resolves once `check()` holds (re-checked on `pc`'s `event`), rejects after `ms`. */
function until(pc, event, check, ms, what) {
  return new Promise((resolve, reject) => {
    const done = (ok) => {
      clearTimeout(timer);
      pc.removeEventListener(event, onChange);
      if (ok) resolve();
      else reject(new Error(what));
    };
    const onChange = () => {
      if (check() === true) done(true);
      else if (check() === false) done(false);
    };
    const timer = setTimeout(() => done(false), ms);
    pc.addEventListener(event, onChange);
    onChange();
  });
}

class AgentkitClient {
  /** Use `connect()`. */
  constructor(options) {
    const { url, sampleRate = CAPTURE_RATE, caller, callerToken, transport = "auto" } = options;
    const { webrtcTimeoutMs = WEBRTC_TIMEOUT_MS } = options;
    this.url = websocketUrl(url);
    this.baseUrl = httpBase(url);
    this.caller = caller;
    this.callerToken = callerToken;
    /** The transport asked for ("auto", "webrtc", "websocket") and the one in use (null until connected). */
    this.transportChoice = transport;
    this.transport = null;
    this._webrtcTimeoutMs = webrtcTimeoutMs;
    this.sessionId = null;
    this.state = "idle";
    this.muted = false;
    /** What the speakers got, measured by an AnalyserNode on the output (see `connect()`):
     *  WebSocket: samples received and fully played, the level (RMS) when the last chunk ended.
     *  WebRTC: samples decoded by the receiver (silence included), output-rate samples during which
     *  the output was audible (RMS over -40 dBFS), the level of the last audible reading.
     *  Both: `peakRms`, the loudest reading. */
    this.stats = { samplesReceived: 0, samplesPlayed: 0, rms: 0, peakRms: 0 };
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // an error is also reported as an `error` event
    this._listeners = new Map();
    this._closed = false;
    this._ws = null;
    this._pc = null;
    this._channel = null;
    this._remote = null; // {element, source} of the WebRTC reply track
    this._timers = [];
    this._mic = null;
    this._sources = new Set();
    this._playhead = 0;
    this._replyDone = true;
    this._outputRate = 0;
    // Audio contexts are made now, inside the caller's click, so the browser lets them run.
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Context) {
      this._captureCtx = this._playCtx = null;
    } else {
      this._playCtx = new Context({ latencyHint: "interactive" });
      try {
        this._captureCtx = new Context({ sampleRate });
      } catch {
        this._captureCtx = new Context();
      }
      this._analyser = this._playCtx.createAnalyser();
      this._analyser.fftSize = 2048;
      this._analyser.connect(this._playCtx.destination);
    }
  }

  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return this;
  }

  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
    return this;
  }

  /** Keep the call but send silence instead of the microphone (the server keeps its timeline). */
  mute(muted = true) {
    this.muted = Boolean(muted);
    if (this._pc && this._mic) for (const track of this._mic.getAudioTracks()) track.enabled = !this.muted;
  }

  /** Send a typed message (a turn, answered aloud). False when there is no session to send it to. */
  sendText(text) {
    const message = JSON.stringify({ type: "text", text: String(text) });
    const ws = this._ws;
    const channel = this._pc ? this._channel : ws;
    const open = channel === ws ? WebSocket.OPEN : "open";
    if (this._closed || !this.sessionId || !channel || channel.readyState !== open) return false;
    try {
      channel.send(message);
    } catch {
      return false;
    }
    return true;
  }

  /** End the session: tell the server, release the microphone, stop playback. Safe to repeat. */
  disconnect() {
    if (this._closed) return;
    const ws = this._ws;
    const stop = JSON.stringify({ type: "stop" });
    for (const channel of [ws, this._channel]) {
      if (channel && channel.readyState === (channel === ws ? WebSocket.OPEN : "open")) {
        try {
          channel.send(stop);
        } catch {
          // closing anyway
        }
      }
    }
    this._shutdown(1000, "client_stop");
  }

  // -- internals -------------------------------------------------------------------------------
  _emit(name, detail) {
    for (const fn of [...(this._listeners.get(name) || [])]) {
      try {
        fn(detail);
      } catch (err) {
        console.error("agentkit: a listener for", name, "failed:", err);
      }
    }
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._emit("state", { state });
  }

  _fail(code, message, fatal = true) {
    this._emit("error", { code, message, fatal });
    if (fatal) {
      this._rejectReady(Object.assign(new Error(message), { code }));
      this._shutdown(1000, code);
    }
  }

  async _start() {
    this._setState("connecting");
    this._emit("connecting", {});
    if (!this._playCtx || !globalThis.navigator?.mediaDevices?.getUserMedia) {
      this._fail("unsupported", "This browser cannot record audio here (a secure page is needed).");
      return;
    }
    try {
      this._mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (err) {
      const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
      if (denied) this._fail("mic_denied", "Microphone access was denied. Allow it to talk.");
      else this._fail("no_microphone", "No microphone could be opened.");
      return;
    }
    if (this._closed) return this._shutdown(1000, "client_stop");
    if (this.transportChoice !== "websocket") {
      if (globalThis.RTCPeerConnection) {
        if (await this._transportWebRTC()) return;
      } else if (this.transportChoice === "webrtc") {
        this._fail("unsupported", "This browser has no WebRTC.");
        return;
      } else {
        this._emit("fallback", { from: "webrtc", to: "websocket", reason: "no RTCPeerConnection" });
      }
    }
    try {
      await this._startCapture();
    } catch (err) {
      this._fail("unsupported", `Audio capture failed: ${err && err.message}`);
      return;
    }
    this._transportWebSocket();
  }

  async _startCapture() {
    let ctx = this._captureCtx;
    let source;
    try {
      source = ctx.createMediaStreamSource(this._mic);
    } catch {
      // Some browsers cannot feed a microphone into a context at another rate: use its own rate.
      await ctx.close();
      ctx = this._captureCtx = new (globalThis.AudioContext || globalThis.webkitAudioContext)();
      source = ctx.createMediaStreamSource(this._mic);
    }
    await Promise.all([ctx.resume(), this._playCtx.resume()]);
    const blobUrl = URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "text/javascript" }));
    try {
      await ctx.audioWorklet.addModule(blobUrl);
    } finally {
      URL.revokeObjectURL(blobUrl);
    }
    const node = new AudioWorkletNode(ctx, "agentkit-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { frameSamples: Math.round((ctx.sampleRate * FRAME_MS) / 1000) },
    });
    node.port.onmessage = (e) => this._sendAudio(e.data);
    node.onprocessorerror = () => this._fail("unsupported", "Audio capture stopped with an error.");
    const sink = ctx.createGain(); // keeps the worklet pulled by the graph, silently
    sink.gain.value = 0;
    source.connect(node).connect(sink).connect(ctx.destination);
    this._captureNode = node;
  }

  _sendAudio(buffer) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.sessionId) return;
    ws.send(this.muted ? new ArrayBuffer(buffer.byteLength) : buffer);
  }

  // -- the WebRTC transport --------------------------------------------------------------------
  /** True when done (connected, or failed for good); false when "auto" should use the WebSocket. */
  async _transportWebRTC() {
    try {
      await this._playCtx.resume();
      const config = await this._fetchJson("webrtc/config");
      if (this._closed) return true; // disconnect() came first: no peer connection at all
      const pc = (this._pc = new RTCPeerConnection({ iceServers: config.iceServers || [] }));
      for (const track of this._mic.getAudioTracks()) pc.addTrack(track, this._mic);
      const channel = (this._channel = pc.createDataChannel("events"));
      channel.onmessage = (e) => {
        if (typeof e.data === "string") this._onServerMessage(e.data);
      };
      pc.ontrack = (e) => this._playRemote(e.streams[0] || new MediaStream([e.track]));
      await pc.setLocalDescription(await pc.createOffer());
      await until(pc, "icegatheringstatechange", () => pc.iceGatheringState === "complete" || null,
        ICE_GATHERING_TIMEOUT_MS, "ICE gathering").catch(() => {}); // send what was gathered
      if (this._closed) return this._closeWebRTC(), true;
      const offer = { sdp: pc.localDescription.sdp, type: "offer" };
      if (this.caller) offer.caller = this.caller;
      if (this.callerToken) offer.caller_token = this.callerToken;
      const answer = await this._fetchJson("webrtc/offer", offer);
      if (this._closed) return this._closeWebRTC(), true;
      this.sessionId = answer.session_id;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      const state = () => pc.connectionState;
      await until(pc, "connectionstatechange",
        () => (state() === "connected" ? true : ["failed", "closed"].includes(state()) ? false : null),
        this._webrtcTimeoutMs, "the peer connection did not reach connected");
    } catch (err) {
      this._closeWebRTC();
      const givenUp = this.sessionId;
      this.sessionId = null;
      // an answered offer holds a session slot on the server until its connect timeout: free it
      // now, so that the WebSocket fallback (or a retry) is not refused as over capacity
      if (givenUp) await this._cancelWebRTCSession(givenUp);
      if (this._closed) return true;
      const reason = (err && err.message) || String(err);
      // refusals the WebSocket would repeat: no fallback
      if (err && ["over_capacity", "busy", "bad_caller_token"].includes(err.code)) {
        this._fail(err.code, err.message);
        return true;
      }
      if (this.transportChoice === "webrtc") {
        this._fail("no_connection", `WebRTC failed: ${reason}`);
        return true;
      }
      this._emit("fallback", { from: "webrtc", to: "websocket", reason });
      return false;
    }
    if (this._closed) return true;
    this.transport = "webrtc";
    this._pc.onconnectionstatechange = () => {
      const state = this._pc && this._pc.connectionState;
      if (!this._closed && (state === "failed" || state === "closed")) {
        this._fail("connection_lost", `The connection to the agent was lost (${state}).`);
      }
    };
    this._every(STATS_POLL_MS, () => this._pollReceived());
    this._emit("connected", {
      sessionId: this.sessionId,
      inputSampleRate: WEBRTC_RATE,
      outputSampleRate: WEBRTC_RATE,
      transport: "webrtc",
    });
    this._resolveReady(this);
    this._setState("listening");
    return true;
  }

  /** GET (no body) or POST JSON to the server; rejects with `{code, message}` on a refusal. */
  async _fetchJson(path, body) {
    const init = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
    const response = await fetch(new URL(path, this.baseUrl), init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const code = String(data.error || `http_${response.status}`);
      throw Object.assign(new Error(`${path}: ${code} ${data.message || ""}`.trim()), { code });
    }
    return data;
  }

  /** DELETE the server's WebRTC session `id` (best effort, waiting a second at most). */
  async _cancelWebRTCSession(id) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 1000);
    try {
      const url = new URL(`webrtc/sessions/${encodeURIComponent(id)}`, this.baseUrl);
      await fetch(url, { method: "DELETE", signal: abort.signal });
    } catch {
      // the server's connect timeout ends it anyway
    } finally {
      clearTimeout(timer);
    }
  }

  /** The reply track: through the analyser to the speakers, like the WebSocket path's buffers. */
  _playRemote(stream) {
    if (this._remote || this._closed) return;
    // Chromium has had versions that feed a remote WebRTC stream into Web Audio only while a media
    // element plays it: a muted one does, at no cost.
    const element = new Audio();
    element.muted = true;
    element.srcObject = stream;
    element.play().catch(() => {});
    const source = this._playCtx.createMediaStreamSource(stream);
    source.connect(this._analyser);
    this._remote = { element, source };
    let last = performance.now();
    this._every(METER_MS, () => {
      const now = performance.now();
      const elapsedS = Math.min(now - last, 100) / 1000; // a stalled timer does not count as sound
      last = now;
      const rms = this._outputRms();
      this.stats.peakRms = Math.max(this.stats.peakRms, rms);
      if (rms < AUDIBLE_RMS) return;
      this.stats.rms = rms;
      this.stats.samplesPlayed += Math.round(elapsedS * this._playCtx.sampleRate);
    });
  }

  async _pollReceived() {
    const pc = this._pc;
    if (!pc) return;
    const report = await pc.getStats().catch(() => null);
    report?.forEach((entry) => {
      if (entry.type === "inbound-rtp" && entry.kind === "audio" && entry.totalSamplesReceived) {
        this.stats.samplesReceived = entry.totalSamplesReceived;
      }
    });
  }

  _every(ms, fn) {
    this._timers.push(setInterval(fn, ms));
  }

  _closeWebRTC() {
    for (const timer of this._timers) clearInterval(timer);
    this._timers = [];
    if (this._remote) {
      this._remote.source.disconnect();
      this._remote.element.srcObject = null;
      this._remote = null;
    }
    const pc = this._pc;
    this._pc = this._channel = null;
    if (!pc) return;
    pc.onconnectionstatechange = pc.ontrack = null;
    // a moment for a `stop` just sent on the data channel to leave before the peer closes
    setTimeout(() => pc.close(), 100);
  }

  // -- the WebSocket transport -----------------------------------------------------------------
  _transportWebSocket() {
    let ws;
    try {
      ws = this._ws = new WebSocket(this.url);
    } catch (err) {
      this._fail("no_connection", `Cannot connect to ${this.url}: ${err && err.message}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    let opened = false;
    ws.onopen = () => {
      opened = true;
      const playRate = this._playCtx.sampleRate;
      const start = {
        type: "start",
        sample_rate: Math.round(this._captureCtx.sampleRate),
        encoding: "pcm_s16le",
      };
      if (playRate >= 8000 && playRate <= MAX_WIRE_RATE) start.output_sample_rate = Math.round(playRate);
      if (this.caller) start.caller = this.caller;
      if (this.callerToken) start.caller_token = this.callerToken;
      ws.send(JSON.stringify(start));
    };
    ws.onmessage = (e) => {
      if (typeof e.data === "string") this._onServerMessage(e.data);
      else this._play(e.data);
    };
    ws.onclose = (e) => {
      if (this._closed) return;
      if (!opened) this._fail("no_connection", "Cannot reach the agent server (or it refused this page).");
      else if (e.code === 1000) this._shutdown(e.code, e.reason || "closed");
      else this._fail("connection_lost", `The connection to the agent closed (code ${e.code}).`);
    };
  }

  _onServerMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    this._emit("message", { message: msg });
    switch (msg.type) {
      case "started":
        this.sessionId = msg.session_id;
        this._outputRate = msg.output_sample_rate;
        this.transport = "websocket";
        this._emit("connected", {
          sessionId: msg.session_id,
          inputSampleRate: msg.input_sample_rate,
          outputSampleRate: msg.output_sample_rate,
          transport: "websocket",
        });
        this._resolveReady(this);
        this._setState("listening");
        break;
      case "state": // WebRTC: the server knows when its track plays the reply
        if (this._pc && ["listening", "thinking", "speaking"].includes(msg.state)) this._setState(msg.state);
        break;
      case "pause_detected":
      case "response_starting":
        if (this._pc) break;
        this._replyDone = false;
        if (this.state !== "speaking") this._setState("thinking");
        break;
      case "response_done":
        if (this._pc) break;
        this._replyDone = true;
        if (this._sources.size === 0) this._setState("listening");
        break;
      case "playback_paused": // a sound over the reply: drop what is buffered; the server re-sends
        this._clearPlayback(); // it on "playback_resumed", or "interrupted" follows
        break;
      case "interrupted":
        this._clearPlayback();
        this._replyDone = true;
        this._setState("listening");
        this._emit("interrupted", { heardMs: msg.heard_ms });
        break;
      case "transcript":
        this._emit("transcript", {
          role: msg.role,
          text: String(msg.text ?? ""),
          interrupted: Boolean(msg.interrupted),
          final: msg.final !== false,
        });
        break;
      case "metrics":
        this._emit("metrics", { turnIndex: msg.turn_index, metrics: msg.metrics || {} });
        break;
      case "tool":
        this._emit("tool", {
          name: String(msg.name ?? ""),
          status: String(msg.status ?? ""),
          durationMs: typeof msg.duration_ms === "number" ? msg.duration_ms : null,
        });
        break;
      case "error":
        this._fail(String(msg.code || "server_error"), String(msg.message || "server error"), !!msg.fatal);
        break;
      case "stopped":
        this._shutdown(1000, String(msg.reason || "stopped"));
        break;
      default:
        break; // started_talking, pong, additional_outputs and future types
    }
  }

  // -- playback --------------------------------------------------------------------------------
  _play(data) {
    const ctx = this._playCtx;
    const pcm = new Int16Array(data, 0, data.byteLength >> 1);
    if (!pcm.length || !this._outputRate || this._closed) return;
    this.stats.samplesReceived += pcm.length;
    const buffer = ctx.createBuffer(1, pcm.length, this._outputRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this._analyser);
    if (this._playhead < ctx.currentTime + 0.005) this._playhead = ctx.currentTime + PLAYBACK_LEAD_S;
    source.start(this._playhead);
    this._playhead += buffer.duration;
    this._sources.add(source);
    source.onended = () => {
      if (!this._sources.delete(source)) return; // cleared by an interruption
      this.stats.samplesPlayed += pcm.length;
      this._measureOutput();
      if (this._sources.size === 0 && this._replyDone && this.state === "speaking") {
        this._setState("listening");
      }
    };
    this._setState("speaking");
  }

  _measureOutput() {
    const rms = this._outputRms();
    this.stats.rms = rms;
    this.stats.peakRms = Math.max(this.stats.peakRms, rms);
  }

  /** The output's level (RMS) over the analyser's window (2048 samples). */
  _outputRms() {
    const data = new Float32Array(this._analyser.fftSize);
    this._analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
    return Math.sqrt(sum / data.length);
  }

  /** Barge-in: silence everything scheduled, at once. */
  _clearPlayback() {
    for (const source of this._sources) {
      source.onended = null;
      try {
        source.stop();
      } catch {
        // never started
      }
      source.disconnect();
    }
    this._sources.clear();
    this._playhead = 0;
  }

  _shutdown(code, reason) {
    if (this._closed) return;
    this._closed = true;
    this._clearPlayback();
    this._closeWebRTC();
    if (this._captureNode) this._captureNode.port.onmessage = null;
    if (this._mic) for (const track of this._mic.getTracks()) track.stop();
    const ws = this._ws;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      ws.onclose = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    for (const ctx of [this._captureCtx, this._playCtx]) if (ctx && ctx.state !== "closed") ctx.close();
    this._rejectReady(Object.assign(new Error("disconnected"), { code: "disconnected" }));
    this._setState("idle");
    this._emit("disconnected", { code, reason });
  }
}

/**
 * Start a voice session with an agentkit server. Call it from a click (browsers only let pages
 * play audio after a user gesture). Returns the client at once; listen for `connected`/`error`, or
 * await `client.ready`.
 *
 * @param {{url: string, transport?: string, sampleRate?: number, caller?: string,
 *          callerToken?: string, webrtcTimeoutMs?: number}} options
 *   url: the server (`https://agent.example`) or its WebSocket (`wss://agent.example/ws`);
 *   transport: "auto" (default: WebRTC, else the WebSocket), "webrtc" or "websocket";
 *   sampleRate: the WebSocket path's capture rate to ask the browser for (default 16000; the rate
 *   used is declared to the server); caller: a label for the caller (shown to the agent, linked to
 *   nothing); callerToken: a caller token from the site's backend (docs/web-client.md), which names
 *   the caller so that a returning caller's history is kept; webrtcTimeoutMs: how long an answered
 *   offer may take to connect (default 5000).
 */
export function connect(options) {
  if (!options || !options.url) throw new TypeError("connect() needs {url}");
  if (options.transport !== undefined && !TRANSPORTS.includes(options.transport)) {
    throw new TypeError(`connect(): transport must be one of ${TRANSPORTS.join(", ")}`);
  }
  const client = new AgentkitClient(options);
  Promise.resolve().then(() => client._start());
  return client;
}
