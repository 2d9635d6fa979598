// The microphone, at the AudioContext's rate: 20 ms of 16-bit PCM at a time, with its level.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frame = new Float32Array(Math.round(sampleRate / 50));
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true; // no microphone (yet): nothing to send
    let offset = 0;
    while (offset < channel.length) {
      const n = Math.min(channel.length - offset, this.frame.length - this.filled);
      this.frame.set(channel.subarray(offset, offset + n), this.filled);
      this.filled += n;
      offset += n;
      if (this.filled === this.frame.length) this.send();
    }
    return true;
  }

  send() {
    const pcm = new Int16Array(this.frame.length);
    let energy = 0;
    for (let i = 0; i < this.frame.length; i++) {
      const x = Math.max(-1, Math.min(1, this.frame[i]));
      energy += x * x;
      pcm[i] = x < 0 ? x * 32768 : x * 32767;
    }
    this.port.postMessage({ pcm, level: Math.sqrt(energy / this.frame.length) }, [pcm.buffer]);
    this.filled = 0;
  }
}

registerProcessor("geminilive-capture", Capture);
