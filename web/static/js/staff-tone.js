// The ring for an invitation: a short two-note tone made with the Web Audio API (no audio files,
// nothing fetched). Browsers keep an AudioContext silent until the page has had a click or key
// press, so unlock() is called from the first gesture (the availability toggle counts).

const NOTES = [784, 988]; // G5 then B5: clear, not alarming
const NOTE_SECONDS = 0.18;
const REPEAT_MS = 2500;
const VOLUME = 0.2;

export class RingTone {
  constructor() {
    this.context = null;
    this.timer = null;
  }

  /** Create or resume the audio context; call from a user gesture. */
  unlock() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    if (!this.context) this.context = new Context();
    if (this.context.state === "suspended") this.context.resume().catch(() => {});
  }

  /** True when the browser would actually play sound now. */
  get audible() {
    return Boolean(this.context && this.context.state === "running");
  }

  get ringing() {
    return this.timer !== null;
  }

  start() {
    if (this.timer !== null) return;
    this.beep();
    this.timer = setInterval(() => this.beep(), REPEAT_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  beep() {
    const ctx = this.context;
    if (!ctx || ctx.state !== "running") return;
    let at = ctx.currentTime + 0.02;
    for (const frequency of NOTES) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = frequency;
      // A soft attack and release: no clicks.
      gain.gain.setValueAtTime(0, at);
      gain.gain.linearRampToValueAtTime(VOLUME, at + 0.02);
      gain.gain.setValueAtTime(VOLUME, at + NOTE_SECONDS - 0.04);
      gain.gain.linearRampToValueAtTime(0, at + NOTE_SECONDS);
      osc.connect(gain).connect(ctx.destination);
      osc.start(at);
      osc.stop(at + NOTE_SECONDS + 0.01);
      at += NOTE_SECONDS + 0.05;
    }
  }
}
