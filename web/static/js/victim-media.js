// The caller's camera and microphone: asks only for what was consented, falls back to what
// the phone allows, and turns each on and off. One MediaStream is kept and changed in place;
// the page hands it to mesh.setLocal() after each change.

// Modest video: the caller is often on a weak mobile network.
const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15, max: 24 } };

export class LocalMedia {
  constructor() {
    this.stream = new MediaStream();
    this.facing = "user";
    this.micOn = false;
    this.stopped = false;
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

  /**
   * Ask for the consented kinds. If the phone refuses both together (one is busy or blocked),
   * try each alone, so a refused camera still leaves the microphone and the reverse.
   * @returns {Promise<{blocked: boolean}>} blocked: something consented could not be had
   */
  async start({ audio, video }) {
    if (!audio && !video) return { blocked: false };
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return { blocked: true };
    try {
      await this.acquire(audio, video);
      return { blocked: false };
    } catch {
      if (!(audio && video)) return { blocked: true };
    }
    let blocked = false;
    for (const [a, v] of [[true, false], [false, true]]) {
      try {
        await this.acquire(a, v);
      } catch {
        blocked = true;
      }
    }
    return { blocked };
  }

  async acquire(audio, video) {
    const got = await navigator.mediaDevices.getUserMedia({
      audio: audio ? { echoCancellation: true, noiseSuppression: true, autoGainControl: true } : false,
      video: video ? { ...VIDEO, facingMode: { ideal: this.facing } } : false,
    });
    for (const track of got.getTracks()) {
      if (this.stopped) {
        // Quick exit or the end came while the phone was asking: give it straight back.
        stopTrack(track);
        continue;
      }
      const old = track.kind === "audio" ? this.audio : this.video;
      if (old) {
        stopTrack(old);
        this.stream.removeTrack(old);
      }
      if (track.kind === "audio") track.enabled = this.micOn = true;
      this.stream.addTrack(track);
    }
  }

  /** Mute or unmute. Muting keeps the track (instant to undo); unmuting may ask for it first. */
  async setMic(on) {
    if (on && !this.audio) await this.acquire(true, false);
    this.micOn = on && Boolean(this.audio);
    if (this.audio) this.audio.enabled = this.micOn;
    return this.micOn;
  }

  /** Camera off stops the track, so the phone's camera light goes out too. */
  async setCamera(on) {
    if (!on) {
      const track = this.video;
      if (track) {
        stopTrack(track);
        this.stream.removeTrack(track);
      }
      return false;
    }
    if (!this.video) await this.acquire(false, true);
    return this.cameraOn;
  }

  /** Front to back camera or back. Phones often cannot open both at once: stop, then open. */
  async switchCamera() {
    if (!this.video) return false;
    const previous = this.facing;
    this.facing = previous === "user" ? "environment" : "user";
    await this.setCamera(false);
    try {
      await this.acquire(false, true);
    } catch {
      this.facing = previous;
      await this.acquire(false, true).catch(() => {});
    }
    return this.cameraOn;
  }

  stop() {
    this.stopped = true;
    for (const track of this.stream.getTracks()) stopTrack(track);
  }
}

function stopTrack(track) {
  // Stop exactly once: quick exit and the end of the call may both get here.
  if (track.readyState !== "ended") track.stop();
}
