// The model's voice. Through the relay the server paces it (its playout buffer is the real
// one), so this queue only smooths the network's jitter, and anything beyond `maxQueueMs` means
// the server's clock ran ahead of the device's. In direct mode the service sends faster than
// real time and this is the whole playout buffer (`maxQueueMs` of a minute). It starts once
// `prebufferMs` is queued (or the tail of a turn has stopped coming), and `clear` empties it
// within one render quantum (2.7 ms at 48 kHz).
// What it plays is counted (the tap the page's tests read): samples, audible samples, energy.
class Playout extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { prebufferMs = 60, maxQueueMs = 400 } = options.processorOptions || {};
    this.queue = new Float32Array(Math.round((sampleRate * (maxQueueMs + 1000)) / 1000));
    this.read = 0;
    this.depth = 0;
    this.prebuffer = Math.round((sampleRate * prebufferMs) / 1000);
    this.maxQueue = Math.round((sampleRate * maxQueueMs) / 1000);
    this.playing = false;
    this.lastPushAt = 0;
    this.stats = { played: 0, audible: 0, energy: 0, gaps: 0, skipped: 0, clears: 0, cleared: 0, depth: 0, level: 0 };
    this.reportedAt = 0;
    this.port.onmessage = (event) => (event.data === "clear" ? this.clear() : this.push(event.data));
  }

  push(pcm) {
    const size = this.queue.length;
    if (this.depth + pcm.length > this.maxQueue) {
      // The server's clock ran ahead of this device's: drop the oldest, keep the latency.
      const drop = this.depth + pcm.length - this.prebuffer;
      this.read = (this.read + drop) % size;
      this.depth -= Math.min(drop, this.depth);
      this.stats.skipped += drop;
    }
    let write = (this.read + this.depth) % size;
    for (let i = 0; i < pcm.length; i++) {
      this.queue[write] = pcm[i] / 32768;
      write = write + 1 === size ? 0 : write + 1;
    }
    this.depth += pcm.length;
    this.lastPushAt = currentTime;
  }

  clear() {
    this.stats.clears += 1;
    this.stats.cleared += this.depth;
    this.read = (this.read + this.depth) % this.queue.length;
    this.depth = 0;
    this.playing = false;
    this.report(true);
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.depth > 0) {
      this.playing = this.depth >= this.prebuffer || currentTime - this.lastPushAt > 0.1;
    }
    let energy = 0;
    let n = 0;
    if (this.playing) {
      n = Math.min(out.length, this.depth);
      const size = this.queue.length;
      for (let i = 0; i < n; i++) {
        const x = this.queue[this.read];
        this.read = this.read + 1 === size ? 0 : this.read + 1;
        out[i] = x;
        energy += x * x;
        if (Math.abs(x) > 1e-3) this.stats.audible += 1;
      }
      this.depth -= n;
      if (this.depth === 0) {
        this.playing = false;
        if (n < out.length && currentTime - this.lastPushAt < 0.05) this.stats.gaps += 1;
      }
    }
    out.fill(0, n);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.stats.played += n;
    this.stats.energy += energy;
    this.stats.level = Math.sqrt(energy / out.length);
    this.report(false);
    return true;
  }

  report(now) {
    if (now || currentTime - this.reportedAt >= 0.05) {
      this.reportedAt = currentTime;
      this.stats.depth = this.depth;
      this.port.postMessage({ ...this.stats, at: currentTime });
    }
  }
}

registerProcessor("geminilive-playout", Playout);
