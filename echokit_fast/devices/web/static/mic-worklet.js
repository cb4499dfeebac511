// The microphone as the firmware sends it: 16 kHz mono PCM16 frames. The graph low-passes the
// input below 8 kHz first (two BiquadFilterNodes); this processor resamples it by linear
// interpolation from the context's rate and posts each frame (an ArrayBuffer of Int16 samples).

const RATE = 16000;

class MicProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frame = new Int16Array(options.processorOptions.frameSamples);
    this.filled = 0;
    this.step = sampleRate / RATE; // input samples per output sample
    this.pos = 0; // where the next output sample falls, in input samples from `last`
    this.last = 0; // the input sample before the current block
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    const n = input.length;
    // output samples at positions pos, pos+step, ... between `last` (index -1) and input[n-1]
    while (this.pos < n) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? this.last : input[i - 1];
      const b = input[i];
      const s = Math.max(-1, Math.min(1, a + (b - a) * frac));
      this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.frame.length) {
        const out = this.frame.slice();
        this.port.postMessage(out.buffer, [out.buffer]);
        this.filled = 0;
      }
      this.pos += this.step;
    }
    this.pos -= n;
    this.last = input[n - 1];
    return true;
  }
}

registerProcessor("echokit-mic", MicProcessor);
