// The microphone, as the talk page's modes share it: opened with the browser's echo
// cancellation (the reply playing on the speakers is kept out of it), low-passed and turned
// into 16 kHz PCM16 frames by the worklet (mic-worklet.js).

export const FRAME = 2048; // samples per microphone frame (128 ms at 16 kHz)

export function openMicrophone() {
  return navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
}

// why the microphone could not be had, in words for the page
export function micError(err) {
  if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) {
    return "Microphone access was denied: allow it for this page and start again.";
  }
  if (err && err.name === "NotFoundError") return "No microphone was found.";
  if (!window.isSecureContext) {
    return "The browser allows the microphone only on a secure page: open it over HTTPS, or as localhost on this computer.";
  }
  return "The microphone could not be opened: " + (err && err.message ? err.message : err);
}

// `stream` into `ctx`'s worklet: onFrame(Int16Array) for each frame
export async function capture(ctx, stream, onFrame) {
  await ctx.audioWorklet.addModule(new URL("mic-worklet.js", import.meta.url));
  let node = ctx.createMediaStreamSource(stream);
  for (let i = 0; i < 2; i++) { // a steep low-pass below the 8 kHz Nyquist of 16 kHz
    const lowpass = new BiquadFilterNode(ctx, { type: "lowpass", frequency: 7000, Q: 0.707 });
    node.connect(lowpass);
    node = lowpass;
  }
  const mic = new AudioWorkletNode(ctx, "echokit-mic", { processorOptions: { frameSamples: FRAME } });
  mic.port.onmessage = (e) => onFrame(new Int16Array(e.data));
  const mute = new GainNode(ctx, { gain: 0 }); // pulled by the destination, never heard
  node.connect(mic).connect(mute).connect(ctx.destination);
}

// the RMS level of a frame, 0 (silence) to 1 (full scale)
export function rms(pcm) {
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += pcm[i] * pcm[i];
  return Math.sqrt(sum / pcm.length) / 32768;
}
