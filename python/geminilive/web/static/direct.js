// Direct mode (`geminilive web --direct`): the page talks to the Live API itself, with an
// ephemeral token the server minted (one use, locked to the server's setup; the API key stays
// on the server). The wire is the Live API's own: the setup, realtimeInput audio at the
// microphone's rate (the service resamples), serverContent back. Sessions resume across goAway
// and dropped connections with the handle the service gives (resuming uses no token use).

const RECONNECT_MS = [0, 250, 500, 1000, 2000];

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function pcmOf(data) {
  const text = atob(data);
  const bytes = new Uint8Array(text.length & ~1);
  for (let i = 0; i < bytes.length; i++) bytes[i] = text.charCodeAt(i);
  return new Int16Array(bytes.buffer);
}

export class DirectSession {
  // `grant`: {token, url, setup}; `hooks`: {audio(pcm24k), clear(), transcript(who, text, done),
  // turn(metrics), state(message), notice(level, text), fresh()}: fresh() asks for a new grant.
  constructor(grant, inputRate, hooks) {
    this.grant = grant;
    this.inputRate = inputRate;
    this.hooks = hooks;
    this.handle = null;
    this.reconnects = 0;
    this.resumptions = 0;
    this.attempt = 0;
    this.closed = false;
    this.turnNumber = 0;
    this.newTurn();
    this.lastVoiceAt = null;
    this.connect();
  }

  newTurn() {
    this.turn = { turn: this.turnNumber, speech_end_to_first_audio_ms: null, interrupted_to_silence_ms: null,
      audio_received_s: 0, interrupted: false, output_transcript: "", heard_transcript: "" };
  }

  connect() {
    const ws = new WebSocket(`${this.grant.url}?access_token=${encodeURIComponent(this.grant.token)}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      const setup = structuredClone(this.grant.setup);
      setup.sessionResumption = this.handle ? { handle: this.handle } : {};
      ws.send(JSON.stringify({ setup }));
    };
    ws.onmessage = (event) => {
      const text = typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data);
      this.onServerMessage(JSON.parse(text));
    };
    ws.onclose = (event) => this.onClose(ws, event);
  }

  onServerMessage(message) {
    if (message.setupComplete) {
      this.attempt = 0;
      const resumed = this.reconnects > 0 && this.resumedWith;
      if (resumed) this.resumptions += 1;
      this.state(resumed ? "resumed" : "connected", resumed ? "resumed with the session's handle" : "");
      this.ready = true;
    }
    const update = message.sessionResumptionUpdate;
    if (update && update.resumable && update.newHandle) this.handle = update.newHandle;
    if (message.goAway) {
      this.state("moving", `the service asked to move (goAway): ${message.goAway.timeLeft || ""} left`);
      this.moveNow();
    }
    const content = message.serverContent;
    if (!content) return;
    for (const part of (content.modelTurn && content.modelTurn.parts) || []) {
      if (part.inlineData && part.inlineData.mimeType.startsWith("audio/pcm")) {
        const pcm = pcmOf(part.inlineData.data);
        if (this.turn.audio_received_s === 0 && this.lastVoiceAt !== null) {
          this.turn.speech_end_to_first_audio_ms = performance.now() - this.lastVoiceAt;
        }
        this.turn.audio_received_s += pcm.length / 24000;
        this.hooks.audio(pcm);
      }
    }
    if (content.inputTranscription) this.hooks.transcript("user", content.inputTranscription.text || "", false);
    if (content.outputTranscription) {
      const words = content.outputTranscription.text || "";
      this.turn.output_transcript += words;
      this.hooks.transcript("model", words, false);
    }
    if (content.interrupted) {
      this.turn.interrupted = true;
      this.hooks.clear();
    }
    if (content.turnComplete) {
      this.hooks.turn(this.turn);
      this.turnNumber += 1;
      this.newTurn();
      this.lastVoiceAt = null;
    }
  }

  moveNow() {
    // goAway: a new connection now, resumed, before the service closes this one.
    const old = this.ws;
    this.reconnects += 1;
    this.resumedWith = this.handle;
    this.ready = false;
    this.connect();
    old.onclose = null;
    old.close(1000, "moving to a new connection");
  }

  onClose(ws, event) {
    if (ws !== this.ws || this.closed) return;
    this.ready = false;
    if (event.code === 1008 && this.resumedWith) {
      // The resume was refused (an expired handle or token): a new session, with a new token.
      this.handle = null;
      this.resumedWith = null;
      this.state("fresh", `a new session: ${event.reason}`);
      this.hooks.fresh().then((grant) => {
        this.grant = grant;
        this.connect();
      }, (error) => this.hooks.notice("error", `no new token: ${error}`));
      return;
    }
    if (event.code === 1000 || event.code === 1008 || event.code === 1007) {
      this.hooks.notice("error", `the Live API closed the session (${event.code}): ${event.reason}`);
      this.state("closed", event.reason);
      return;
    }
    const delay = RECONNECT_MS[Math.min(this.attempt, RECONNECT_MS.length - 1)];
    this.attempt += 1;
    this.reconnects += 1;
    this.resumedWith = this.handle;
    this.state("reconnecting", `attempt ${this.attempt}: ${event.code} ${event.reason}`.trim());
    setTimeout(() => this.closed || this.connect(), delay);
  }

  state(state, detail) {
    this.hooks.state({ state, reconnects: this.reconnects, resumptions: this.resumptions, detail });
  }

  sendAudio(pcm, level) {
    if (level > 0.02) this.lastVoiceAt = performance.now();
    if (!this.ready || this.ws.readyState !== WebSocket.OPEN) return false;
    const data = base64(new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength));
    this.ws.send(JSON.stringify({ realtimeInput: { audio: { data, mimeType: `audio/pcm;rate=${this.inputRate}` } } }));
    return true;
  }

  sendText(text) {
    if (this.ready) this.ws.send(JSON.stringify({ realtimeInput: { text } }));
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000, "stopped on the page");
  }
}
