// The page: microphone -> relay -> geminilive -> the model, and the model's voice back (or,
// in direct mode, microphone -> the Live API with an ephemeral token: direct.js).
// No build step: plain modules. Everything the page knows is in `window.geminilive` too
// (its tests read it).

import { DirectSession } from "/static/direct.js";

const $ = (id) => document.getElementById(id);
const MAX_BUFFERED_S = 5; // microphone audio kept while the relay reconnects, then sent
const NO_RETRY = new Set([1000, 1008, 4001, 4408, 4409]); // closes the page does not retry after
const BACKOFF_MS = [250, 500, 1000, 2000, 4000];
const TURNS_SHOWN = 20;

const tabId = (() => {
  let id = sessionStorage.getItem("geminilive-tab"); // per tab, kept across reloads and reconnects
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem("geminilive-tab", id);
  }
  return id;
})();

const live = {
  tab: tabId,
  mode: null, // "relay" or "direct"
  relay: { state: "idle", reconnects: 0, closes: [] },
  session: { state: "-", reconnects: 0, resumptions: 0, detail: "" },
  ready: null,
  transcripts: [],
  turns: [],
  notices: [],
  capture: { frames: 0, sent: 0, dropped: 0, level: 0 },
  playout: null,
  clearsReceived: 0,
  clearToSilenceMs: [],
  atClear: null,
};
window.geminilive = live;

let ctx = null;
let playCtx = null; // the same context, but for direct mode's 24 kHz (the browser resamples)
let direct = null;
let micStream = null;
let capture = null;
let playout = null;
let relay = null;
let stopped = true;
let retry = 0;
let retryTimer = null;
let buffered = []; // 20 ms frames of microphone audio waiting for an open relay
let clearSentAt = [];

// --- notices, transcript, state ------------------------------------------------------------

function notice(level, message) {
  live.notices.push({ level, message, at: Date.now() });
  const box = $("notices");
  const p = document.createElement("p");
  p.className = `notice ${level}`;
  p.textContent = message;
  box.prepend(p);
  while (box.children.length > 5) box.lastChild.remove();
}

function setRelayState(state) {
  live.relay.state = state;
  $("relay-state").textContent = state;
}

function showSession(message) {
  Object.assign(live.session, {
    state: message.state,
    reconnects: message.reconnects,
    resumptions: message.resumptions,
    detail: message.detail,
  });
  $("session-state").textContent = message.state;
  $("session-reconnects").textContent = message.reconnects;
  $("resumptions").textContent = message.resumptions;
  $("session-detail").textContent = message.detail;
}

const openLines = { user: null, model: null };

function transcript(who, text, finished) {
  let line = openLines[who];
  if (!line) {
    line = { who, text: "", finished: false, node: document.createElement("p") };
    line.node.className = `${who} partial`;
    line.node.append(Object.assign(document.createElement("b"), { textContent: who === "user" ? "you: " : "model: " }));
    line.node.append(document.createTextNode(""));
    $("transcript").append(line.node);
    live.transcripts.push(line);
    openLines[who] = line;
  }
  line.text += text;
  line.node.lastChild.textContent = line.text;
  if (finished) endLine(who);
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

function endLine(who) {
  const line = openLines[who];
  if (line) {
    line.finished = true;
    line.node.classList.remove("partial");
    openLines[who] = null;
  }
}

// --- latency chart -------------------------------------------------------------------------

function showTurn(metrics) {
  const at = live.turns.findIndex((t) => t.turn === metrics.turn);
  if (at >= 0) live.turns[at] = metrics;
  else live.turns.push(metrics);
  endLine("user");
  endLine("model");
  const ms = (v) => (v === null || v === undefined ? "-" : v.toFixed(0));
  const body = $("turns").tBodies[0];
  body.replaceChildren(
    ...live.turns.slice(-TURNS_SHOWN).reverse().map((t) => {
      const row = document.createElement("tr");
      for (const cell of [
        t.turn,
        ms(t.speech_end_to_first_audio_ms),
        ms(t.interrupted_to_silence_ms),
        t.audio_received_s.toFixed(2),
        t.interrupted ? "yes" : "",
        t.interrupted ? t.heard_transcript : t.output_transcript,
      ]) {
        row.append(Object.assign(document.createElement("td"), { textContent: cell }));
      }
      return row;
    }),
  );
  drawChart();
}

function drawChart() {
  const canvas = $("latency-chart");
  const g = canvas.getContext("2d");
  const turns = live.turns.slice(-TURNS_SHOWN);
  const left = 48;
  const bottom = canvas.height - 22;
  const top = 10;
  const values = turns.flatMap((t) => [t.speech_end_to_first_audio_ms || 0, t.interrupted_to_silence_ms || 0]);
  const scale = Math.max(500, ...values);
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.font = "11px system-ui";
  g.fillStyle = "#5b6577";
  g.strokeStyle = "#e3e7ee";
  for (let i = 0; i <= 4; i++) {
    const y = bottom - ((bottom - top) * i) / 4;
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(canvas.width, y);
    g.stroke();
    g.fillText(`${Math.round((scale * i) / 4)}`, 4, y + 4);
  }
  const slot = (canvas.width - left) / TURNS_SHOWN;
  turns.forEach((t, i) => {
    const x = left + i * slot + slot * 0.15;
    const bar = (value, offset, color) => {
      if (value === null || value === undefined) return;
      const h = ((bottom - top) * value) / scale;
      g.fillStyle = color;
      g.fillRect(x + offset, bottom - h, slot * 0.32, h);
    };
    bar(t.speech_end_to_first_audio_ms, 0, "#2f5d9d");
    bar(t.interrupted_to_silence_ms, slot * 0.36, "#d9822b");
    g.fillStyle = "#5b6577";
    g.fillText(`${t.turn}`, x + slot * 0.2, canvas.height - 6);
  });
}

// --- meters --------------------------------------------------------------------------------

function meter(id, level) {
  const db = 20 * Math.log10(level + 1e-9);
  $(`${id}-level`).style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
  $(`${id}-db`).textContent = level > 1e-6 ? `${db.toFixed(0)} dBFS` : "silent";
}

// --- the relay -----------------------------------------------------------------------------

function connect() {
  clearTimeout(retryTimer);
  setRelayState(live.relay.reconnects || retry ? `reconnecting (attempt ${retry + 1})` : "connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/relay`);
  ws.binaryType = "arraybuffer";
  relay = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "hello", client: tabId, sampleRate: ctx.sampleRate }));
    for (const pcm of buffered) ws.send(pcm);
    live.capture.sent += buffered.length;
    buffered = [];
  };
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {
      const pcm = new Int16Array(event.data);
      playout.port.postMessage(pcm, [pcm.buffer]);
      return;
    }
    onMessage(JSON.parse(event.data));
  };
  ws.onclose = (event) => {
    if (relay !== ws) return;
    relay = null;
    live.relay.closes.push({ code: event.code, reason: event.reason });
    if (stopped) return setRelayState("closed");
    if (NO_RETRY.has(event.code)) {
      setRelayState(`closed (${event.code})`);
      if (event.reason) notice(event.code === 1000 ? "info" : "error", event.reason);
      stop(false);
      return;
    }
    const delay = BACKOFF_MS[Math.min(retry, BACKOFF_MS.length - 1)];
    retry += 1;
    setRelayState(`lost (${event.code}); retrying in ${delay} ms`);
    retryTimer = setTimeout(connect, delay);
  };
}

function onMessage(message) {
  switch (message.type) {
    case "ready": {
      live.ready = message;
      if (retry > 0) live.relay.reconnects += 1;
      retry = 0;
      $("relay-reconnects").textContent = live.relay.reconnects;
      setRelayState(message.reattached ? "open (same conversation)" : "open");
      const service = message.backend !== "emulator";
      $("backend").textContent = `${message.backend}: ${message.model}${message.voice ? ` (${message.voice})` : ""}`;
      $("backend").className = `badge ${service ? "service" : "emulator"}`;
      $("audio-rates").textContent = `${message.outputRate} Hz here, ${message.inputRate} Hz to the model`;
      break;
    }
    case "clear":
      live.clearsReceived += 1;
      clearSentAt.push(performance.now());
      playout.port.postMessage("clear");
      endLine("model");
      break;
    case "transcript":
      transcript(message.who, message.text, message.finished);
      break;
    case "turn":
      showTurn(message.metrics);
      break;
    case "state":
      showSession(message);
      break;
    case "notice":
      notice(message.level, message.message);
      break;
    default:
      notice("warning", `the relay sent a message this page does not know: ${message.type}`);
  }
}

function sendMic(pcm) {
  live.capture.frames += 1;
  if (relay && relay.readyState === WebSocket.OPEN) { // (after the hello: onopen sends it first)
    relay.send(pcm);
    live.capture.sent += 1;
    return;
  }
  buffered.push(pcm);
  if (buffered.length > MAX_BUFFERED_S * 50) {
    buffered.shift();
    live.capture.dropped += 1;
  }
}

// --- start and stop ------------------------------------------------------------------------

// Direct mode's ephemeral token: asked of the relay (its Origin checks apply), one use.
function requestToken() {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/relay`);
    ws.onopen = () => ws.send(JSON.stringify({ type: "token" }));
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "token") resolve(message);
      else if (message.type === "notice") notice(message.level, message.message);
    };
    ws.onclose = (event) => reject(new Error(`no token (${event.code} ${event.reason})`));
  });
}

function startDirect(grant) {
  live.ready = { backend: grant.backend, model: grant.setup.model.replace(/^models\//, ""), outputRate: 24000,
    inputRate: ctx.sampleRate, reattached: false, voice: null };
  $("backend").textContent = `${grant.backend}, direct: ${live.ready.model}`;
  $("backend").className = `badge ${grant.backend === "emulator" ? "emulator" : "service"}`;
  $("audio-rates").textContent = `${ctx.sampleRate} Hz to the Live API, 24000 Hz back`;
  setRelayState("direct to the Live API");
  direct = new DirectSession(grant, ctx.sampleRate, {
    audio: (pcm) => playout.port.postMessage(pcm, [pcm.buffer]),
    clear: () => onMessage({ type: "clear" }),
    transcript,
    turn: (metrics) => showTurn({ ...metrics, interrupted_to_silence_ms: metrics.interrupted ? live.clearToSilenceMs.at(-1) ?? null : null }),
    state: showSession,
    notice,
    fresh: requestToken,
  });
}

async function start() {
  $("start").disabled = true;
  stopped = false;
  live.ready = null;
  live.mode = (await (await fetch("/config.json")).json()).mode;
  ctx = new AudioContext({ latencyHint: "interactive" });
  playCtx = live.mode === "direct" ? new AudioContext({ latencyHint: "interactive", sampleRate: 24000 }) : ctx;
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  await playCtx.audioWorklet.addModule("/static/playout-worklet.js");
  playout = new AudioWorkletNode(playCtx, "geminilive-playout", {
    outputChannelCount: [1],
    processorOptions: { maxQueueMs: live.mode === "direct" ? 60000 : 400 },
  });
  playout.connect(playCtx.destination);
  playout.port.onmessage = (event) => {
    const stats = event.data;
    if (live.playout && stats.clears > live.playout.clears && clearSentAt.length) {
      live.clearToSilenceMs.push(performance.now() - clearSentAt.shift());
      live.atClear = stats; // what had played when the queue was emptied
      $("session-detail").textContent = `barge-in: the page was silent ${live.clearToSilenceMs.at(-1).toFixed(1)} ms after the clear`;
    }
    live.playout = stats;
    meter("speaker", stats.level);
  };
  capture = new AudioWorkletNode(ctx, "geminilive-capture", { numberOfOutputs: 0 });
  capture.port.onmessage = (event) => {
    live.capture.level = event.data.level;
    meter("mic", event.data.level);
    if (direct) {
      live.capture.frames += 1;
      if (direct.sendAudio(event.data.pcm, event.data.level)) live.capture.sent += 1;
      else live.capture.dropped += 1;
    } else if (live.mode === "relay") sendMic(event.data.pcm);
  };
  if (!navigator.mediaDevices) {
    notice("error", "this browser gives the microphone only to https:// pages and localhost");
  } else {
    try {
      micStream = await navigator.mediaDevices.getUserMedia({
        audio: {
          channelCount: 1,
          echoCancellation: $("echo-cancellation").checked,
          noiseSuppression: $("noise-suppression").checked,
          autoGainControl: true,
        },
      });
      ctx.createMediaStreamSource(micStream).connect(capture);
      const { echoCancellation, noiseSuppression, autoGainControl, sampleRate } = micStream
        .getAudioTracks()[0]
        .getSettings();
      live.capture.settings = { echoCancellation, noiseSuppression, autoGainControl, sampleRate };
    } catch (error) {
      notice("error", `no microphone (${error.name}): allow it for this page; you can still type`);
    }
  }
  $("stop").disabled = false;
  if (live.mode === "direct") startDirect(await requestToken());
  else connect();
}

function stop(closeRelay = true) {
  stopped = true;
  clearTimeout(retryTimer);
  if (closeRelay && relay) relay.close(1000, "stopped on the page");
  relay = null;
  if (direct) direct.close();
  direct = null;
  if (playCtx && playCtx !== ctx) playCtx.close();
  playCtx = null;
  if (micStream) micStream.getTracks().forEach((track) => track.stop());
  micStream = null;
  if (ctx) ctx.close();
  ctx = null;
  buffered = [];
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("start").addEventListener("click", () => start().catch((error) => notice("error", `could not start: ${error}`)));
$("stop").addEventListener("click", () => stop());
$("type-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("typed").value.trim();
  if (!text) return;
  if (direct) direct.sendText(text);
  else if (relay && relay.readyState === WebSocket.OPEN) relay.send(JSON.stringify({ type: "text", text }));
  else return notice("warning", "not connected: start first");
  transcript("user", text, true);
  $("typed").value = "";
});
drawChart();
