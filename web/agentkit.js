// agentkit.js: talk to an agentkit server from a web page. A dependency-free ES module.
//
//   import { connect } from "https://agent.example/agentkit.js";
//   const client = connect({ url: "https://agent.example" });
//   client.on("transcript", ({ role, text }) => console.log(role, text));
//   client.on("error", ({ code, message }) => console.warn(code, message));
//   ... later: client.disconnect();
//
// Transport: the WebSocket protocol (docs/websocket-protocol.md): 16-bit PCM both ways, JSON
// events. `url` is the server's base URL (http/https, the WebSocket is `<url>/ws`) or the WebSocket
// URL itself (ws/wss). A WebRTC path (`<url>/webrtc/offer`) can become the preferred transport later
// with this one as the fallback: everything above `#transport*` is transport-neutral.
//
// Events (`client.on(name, fn)`; `fn` gets one object):
//   connecting   {}
//   connected    {sessionId, inputSampleRate, outputSampleRate}
//   state        {state}: "connecting" | "listening" | "thinking" | "speaking" | "idle"
//   transcript   {role: "user" | "assistant", text, interrupted}
//   metrics      {turnIndex, metrics}   (voice_to_voice_ms, stt_ms, llm_ttft_ms, tts_ttfa_ms, ...)
//   interrupted  {heardMs}
//   error        {code, message, fatal}: mic_denied, no_microphone, unsupported, no_connection,
//                connection_lost, over_capacity, or any server error code
//   disconnected {code, reason}
//   message      {message}: every JSON message from the server, as received

export const VERSION = "0.1.0";

const FRAME_MS = 20;
const CAPTURE_RATE = 16000;
const MAX_WIRE_RATE = 48000;
const PLAYBACK_LEAD_S = 0.05; // a small jitter margin before the first chunk of a reply plays

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

class AgentkitClient {
  /** Use `connect()`. */
  constructor({ url, sampleRate = CAPTURE_RATE, caller }) {
    this.url = websocketUrl(url);
    this.caller = caller;
    this.sessionId = null;
    this.state = "idle";
    this.muted = false;
    /** What the speakers got: samples fully played, and the output level (RMS) when the last
     *  reply chunk ended and the loudest seen, measured by an AnalyserNode on the output. */
    this.stats = { samplesReceived: 0, samplesPlayed: 0, rms: 0, peakRms: 0 };
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // an error is also reported as an `error` event
    this._listeners = new Map();
    this._closed = false;
    this._ws = null;
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
  }

  /** End the session: tell the server, release the microphone, stop playback. Safe to repeat. */
  disconnect() {
    if (this._closed) return;
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      try {
        ws.send(JSON.stringify({ type: "stop" }));
      } catch {
        // closing anyway
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
        this._emit("connected", {
          sessionId: msg.session_id,
          inputSampleRate: msg.input_sample_rate,
          outputSampleRate: msg.output_sample_rate,
        });
        this._resolveReady(this);
        this._setState("listening");
        break;
      case "pause_detected":
      case "response_starting":
        this._replyDone = false;
        if (this.state !== "speaking") this._setState("thinking");
        break;
      case "response_done":
        this._replyDone = true;
        if (this._sources.size === 0) this._setState("listening");
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
        });
        break;
      case "metrics":
        this._emit("metrics", { turnIndex: msg.turn_index, metrics: msg.metrics || {} });
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
    const data = new Float32Array(this._analyser.fftSize);
    this._analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
    const rms = Math.sqrt(sum / data.length);
    this.stats.rms = rms;
    this.stats.peakRms = Math.max(this.stats.peakRms, rms);
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
 * @param {{url: string, sampleRate?: number, caller?: string}} options
 *   url: the server (`https://agent.example`) or its WebSocket (`wss://agent.example/ws`);
 *   sampleRate: the capture rate to ask the browser for (default 16000; the rate used is declared
 *   to the server); caller: an id for the caller, so a returning caller's history is kept.
 */
export function connect(options) {
  if (!options || !options.url) throw new TypeError("connect() needs {url}");
  const client = new AgentkitClient(options);
  Promise.resolve().then(() => client._start());
  return client;
}
