// The caller's camera and microphone: asks only for what was consented, falls back to what
// the phone allows, turns each on and off, and keeps going whatever the phone does to them.
// One MediaStream is kept and changed in place; the page hands it to mesh.setLocal() after
// each change ("change" event) and tells the handler what works (`states`).
//
// Phones take things away: a 999 call holds the microphone (NotReadableError), a refusal is
// NotAllowedError, a camera that cannot do the asked size is OverconstrainedError, and iOS ends
// or mutes tracks when a call comes in or the page goes to the background. None of these is a
// dead end: the page carries on with what it has, re-acquires an ended track when it can, and
// each kind's state says what is missing.

// Modest video: the caller is often on a weak mobile network.
const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15, max: 24 } };
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
const BUSY_RETRY_MS = 700;
const REACQUIRE_MS = 1000;

/** A getUserMedia failure as a capture state (server/caller_state.py CAPTURE_STATES). */
export function captureState(error) {
  const name = error && error.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") return "denied";
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") return "busy";
  return "unavailable"; // NotFoundError, OverconstrainedError, no API at all
}

export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.stream = new MediaStream();
    this.facing = "user";
    this.micOn = false;
    this.stopped = false;
    this.states = { camera: "off", microphone: "off" };
    this.wanted = { camera: false, microphone: false }; // what the page should keep alive
    this.reacquireTimer = null;
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reacquire();
    });
  }

  get audio() {
    return this.stream.getAudioTracks()[0] || null;
  }

  get video() {
    return this.stream.getVideoTracks()[0] || null;
  }

  get cameraOn() {
    return Boolean(this.video);
  }

  setState(kind, state) {
    if (this.states[kind] === state) return;
    this.states[kind] = state;
    this.changed();
  }

  changed() {
    if (!this.stopped) this.dispatchEvent(new Event("change"));
  }

  /**
   * Ask for the consented kinds. If the phone refuses both together (one is busy or blocked),
   * try each alone, so a refused camera still leaves the microphone and the reverse.
   * @returns {Promise<{blocked: boolean}>} blocked: something consented could not be had
   */
  async start({ audio, video }) {
    this.wanted = { camera: Boolean(video), microphone: Boolean(audio) };
    if (!audio && !video) return { blocked: false };
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      if (video) this.setState("camera", "unavailable");
      if (audio) this.setState("microphone", "unavailable");
      return { blocked: true };
    }
    try {
      await this.acquire(audio, video);
      return { blocked: false };
    } catch (err) {
      if (!(audio && video)) {
        this.setState(video ? "camera" : "microphone", captureState(err));
        return { blocked: true };
      }
    }
    let blocked = false;
    for (const [a, v] of [[true, false], [false, true]]) {
      try {
        await this.acquire(a, v);
      } catch (err) {
        this.setState(v ? "camera" : "microphone", captureState(err));
        blocked = true;
      }
    }
    return { blocked };
  }

  /** getUserMedia with fallbacks: any size if the asked one cannot be had, and one retry if
   *  the device is busy for a moment (the phone app letting go of it). */
  async acquire(audio, video) {
    const ask = (videoConstraint) => navigator.mediaDevices.getUserMedia({
      audio: audio ? AUDIO : false,
      video: video ? videoConstraint : false,
    });
    let got;
    try {
      got = await ask({ ...VIDEO, facingMode: { ideal: this.facing } });
    } catch (err) {
      if (!video || !["OverconstrainedError", "NotReadableError", "AbortError"].includes(err.name)) throw err;
      if (err.name !== "OverconstrainedError") await sleep(BUSY_RETRY_MS);
      got = await ask(true);
    }
    for (const track of got.getTracks()) this.adopt(track);
    // One change for all the new tracks: the page renegotiates once, not once per track.
    this.changed();
  }

  adopt(track) {
    if (this.stopped) {
      // Quick exit or the end came while the phone was asking: give it straight back.
      stopTrack(track);
      return;
    }
    const kind = track.kind === "audio" ? "microphone" : "camera";
    const old = track.kind === "audio" ? this.audio : this.video;
    if (old) {
      stopTrack(old);
      this.stream.removeTrack(old);
    }
    if (track.kind === "audio") track.enabled = this.micOn = true;
    this.stream.addTrack(track);
    this.wanted[kind] = true;
    // The phone may end or mute a track (a call coming in, the page in the background).
    track.addEventListener("ended", () => this.onEnded(track, kind));
    track.addEventListener("mute", () => {
      if (this.has(track)) this.setState(kind, "muted");
    });
    track.addEventListener("unmute", () => {
      if (this.has(track)) this.setState(kind, "ok");
    });
    this.states[kind] = track.muted ? "muted" : "ok";
  }

  has(track) {
    return this.stream.getTracks().includes(track);
  }

  onEnded(track, kind) {
    if (!this.has(track) || this.stopped) return; // we stopped it ourselves
    this.stream.removeTrack(track);
    if (kind === "microphone") this.micOn = false;
    this.setState(kind, "ended");
    clearTimeout(this.reacquireTimer);
    this.reacquireTimer = setTimeout(() => this.reacquire(), REACQUIRE_MS);
  }

  /** Get back what the phone took away (iOS: after a call, or when the page is visible). */
  async reacquire() {
    if (this.stopped) return;
    const camera = this.wanted.camera && !this.video && this.states.camera !== "off";
    const microphone = this.wanted.microphone && !this.audio && this.states.microphone !== "off";
    for (const [kind, needed] of [["camera", camera], ["microphone", microphone]]) {
      if (!needed || document.visibilityState === "hidden") continue;
      try {
        await this.acquire(kind === "microphone", kind === "camera");
      } catch (err) {
        // "ended" stays "ended" until it works; a refusal says so.
        if (captureState(err) === "denied") this.setState(kind, "denied");
      }
    }
  }

  /** Mute or unmute. Muting keeps the track (instant to undo); unmuting may ask for it first. */
  async setMic(on) {
    this.wanted.microphone = on;
    if (on && !this.audio) {
      try {
        await this.acquire(true, false);
      } catch (err) {
        this.setState("microphone", captureState(err));
        throw err;
      }
    }
    this.micOn = on && Boolean(this.audio);
    if (this.audio) this.audio.enabled = this.micOn;
    this.setState("microphone", this.micOn ? (this.audio.muted ? "muted" : "ok") : "off");
    return this.micOn;
  }

  /** Drop the microphone altogether (back to the phone line): its light goes out. */
  releaseMic() {
    this.wanted.microphone = false;
    const track = this.audio;
    if (track) {
      stopTrack(track);
      this.stream.removeTrack(track);
    }
    this.micOn = false;
    this.setState("microphone", "not_asked");
  }

  /** Camera off stops the track, so the phone's camera light goes out too. */
  async setCamera(on) {
    this.wanted.camera = on;
    if (!on) {
      const track = this.video;
      if (track) {
        stopTrack(track);
        this.stream.removeTrack(track);
      }
      this.setState("camera", "off");
      return false;
    }
    if (!this.video) {
      try {
        await this.acquire(false, true);
      } catch (err) {
        this.setState("camera", captureState(err));
        throw err;
      }
    }
    return this.cameraOn;
  }

  /** Front to back camera or back. Phones often cannot open both at once: stop, then open. */
  async switchCamera() {
    if (!this.video) return false;
    const previous = this.facing;
    this.facing = previous === "user" ? "environment" : "user";
    const old = this.video;
    stopTrack(old);
    this.stream.removeTrack(old);
    try {
      await this.acquire(false, true);
    } catch {
      this.facing = previous;
      await this.acquire(false, true).catch((err) => this.setState("camera", captureState(err)));
    }
    return this.cameraOn;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.reacquireTimer);
    for (const track of this.stream.getTracks()) stopTrack(track);
  }
}

function stopTrack(track) {
  // Stop exactly once: quick exit and the end of the call may both get here.
  if (track.readyState !== "ended") track.stop();
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
