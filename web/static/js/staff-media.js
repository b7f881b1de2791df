// Media on the staff pages: the staff member's microphone (optional: without it the console
// still receives), the caller's video with sound, and other staff members' voices.

import { t } from "./i18n.js";
import { byTestId, el, setState, show } from "./staff-dom.js";

/** The microphone, or null with a reason; staff without one (or who refuse) still receive. */
export async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return { stream: null, reason: "unsupported" };
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
    return { stream, reason: null };
  } catch (err) {
    return { stream: null, reason: err && err.name === "NotAllowedError" ? "denied" : "unavailable" };
  }
}

export class RemoteMedia {
  constructor(root) {
    this.video = byTestId(root, "remote-video");
    this.waiting = byTestId(root, "video-waiting");
    this.soundButton = byTestId(root, "enable-sound");
    this.audioBox = byTestId(root, "staff-audio");
    this.victimPid = null;
    this.audios = new Map(); // pid -> <audio> of another staff member
    if (this.video) {
      this.video.addEventListener("playing", () => show(this.waiting, false));
    }
    if (this.soundButton) {
      // Browsers may refuse sound until the page has been clicked: this click is the gesture.
      this.soundButton.addEventListener("click", () => this.enableSound());
    }
  }

  /** Only the caller's stream goes into the big video; it carries the caller's sound too. */
  showVictim(pid, stream) {
    if (!this.video) return;
    this.victimPid = pid;
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    this.play(this.video);
  }

  victimAway(away) {
    if (!this.waiting) return;
    if (away) {
      this.waiting.textContent = t("staff.video.away");
      show(this.waiting, true);
    } else if (this.video && this.video.srcObject && !this.video.paused) {
      show(this.waiting, false);
    }
  }

  addStaffAudio(pid, role, stream) {
    if (!this.audioBox) return;
    let audio = this.audios.get(pid);
    if (!audio) {
      audio = el("audio", { autoplay: true, "data-testid": `staff-audio-${role}`, dataset: { pid } });
      this.audios.set(pid, audio);
      this.audioBox.append(audio);
    }
    if (audio.srcObject !== stream) audio.srcObject = stream;
    this.play(audio);
  }

  removePeer(pid) {
    const audio = this.audios.get(pid);
    if (audio) {
      audio.srcObject = null;
      audio.remove();
      this.audios.delete(pid);
    }
    if (pid === this.victimPid && this.video) {
      this.victimPid = null;
      this.video.srcObject = null;
      if (this.waiting) {
        this.waiting.textContent = t("staff.video.left");
        show(this.waiting, true);
      }
    }
  }

  async play(media) {
    try {
      await media.play();
    } catch (err) {
      if (err && err.name === "NotAllowedError") {
        // Sound is blocked until a click: play muted now, offer the button to hear it.
        media.muted = true;
        show(this.soundButton, true);
        try {
          await media.play();
        } catch {
          /* still blocked: the button's click plays it */
        }
      }
      // AbortError: a newer stream replaced this one; nothing to do.
    }
  }

  enableSound() {
    for (const media of [this.video, ...this.audios.values()]) {
      if (!media) continue;
      media.muted = false;
      media.play().catch(() => {});
    }
    show(this.soundButton, false);
  }

  stop() {
    if (this.video) {
      this.video.pause();
      this.video.srcObject = null;
    }
    for (const pid of [...this.audios.keys()]) this.removePeer(pid);
    show(this.soundButton, false);
    if (this.waiting) {
      this.waiting.textContent = t("staff.video.stopped");
      show(this.waiting, true);
    }
  }
}

/** The staff member's own microphone: on, muted by them, or not available. */
export class MicrophoneControl {
  constructor(root) {
    this.button = byTestId(root, "mic-toggle");
    this.state = byTestId(root, "mic-state");
    this.stream = null;
    if (this.button) this.button.addEventListener("click", () => this.setMuted(!this.muted()));
  }

  use(stream, reason) {
    this.stream = stream;
    if (!stream) {
      setState(this.state, reason || "off", t(`staff.mic.${reason || "off"}`));
      show(this.button, false);
      return;
    }
    show(this.button, true);
    this.setMuted(false);
  }

  muted() {
    return Boolean(this.stream && this.stream.getAudioTracks().every((track) => !track.enabled));
  }

  setMuted(muted) {
    if (!this.stream) return;
    for (const track of this.stream.getAudioTracks()) track.enabled = !muted;
    // A toggle button keeps its label ("Mute my microphone"); aria-pressed says if it is on.
    if (this.button) this.button.setAttribute("aria-pressed", String(muted));
    setState(this.state, muted ? "muted" : "on", t(muted ? "staff.mic.muted" : "staff.mic.on"));
  }

  stop() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    show(this.button, false);
    setState(this.state, "off", t("staff.mic.off"));
  }
}
