// Still pictures, the fallback ladder's third rung: when no video path connects (or the browser
// has no WebRTC at all) a frame of the caller's camera goes to the control room every few
// seconds over plain HTTPS, which gets through wherever the page itself loaded. Each is kept
// as evidence with its hash, like a handler's snapshot. One upload at a time: on a weak link
// a picture that is still on its way is worth more than a newer one queued behind it.

const MAX_WIDTH = 640;
const QUALITY = 0.7;

export class StillSender {
  /**
   * @param {() => MediaStreamTrack|null} track the camera track now
   * @param {() => string} credential the call's credential (bearer)
   * @param {number} everyMs how often to send
   */
  constructor(track, credential, everyMs) {
    this.track = track;
    this.credential = credential;
    this.everyMs = everyMs;
    this.timer = null;
    this.busy = false;
    this.sent = 0;
    this.failed = 0;
    this.video = document.createElement("video");
    this.video.muted = true;
    this.video.playsInline = true;
    this.video.setAttribute("playsinline", "");
    this.canvas = document.createElement("canvas");
  }

  get running() {
    return this.timer !== null;
  }

  start() {
    if (this.running) return;
    this.timer = setInterval(() => this.capture(), this.everyMs);
    this.capture();
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.video.srcObject = null;
  }

  async capture() {
    if (this.busy) return;
    const track = this.track();
    if (!track || track.readyState !== "live") return;
    this.busy = true;
    try {
      const blob = await this.frame(track);
      if (!blob || !this.running) return;
      const response = await fetch("/j/still", {
        method: "POST",
        credentials: "omit",
        cache: "no-store",
        referrerPolicy: "no-referrer",
        headers: { Authorization: `Bearer ${this.credential()}`, "Content-Type": blob.type },
        body: blob,
      });
      if (response.ok) this.sent += 1;
      else this.failed += 1;
    } catch {
      this.failed += 1; // the network is down too: the next tick tries again
    } finally {
      this.busy = false;
    }
  }

  /** One JPEG frame of the camera, at most MAX_WIDTH wide. */
  async frame(track) {
    const video = this.video;
    if (!video.srcObject || video.srcObject.getVideoTracks()[0] !== track) {
      video.srcObject = new MediaStream([track]);
    }
    if (video.readyState < 2) {
      await video.play().catch(() => {});
      await new Promise((resolve) => {
        if (video.readyState >= 2) resolve();
        else video.addEventListener("loadeddata", resolve, { once: true });
        setTimeout(resolve, 2000);
      });
    }
    if (!video.videoWidth) return null;
    const scale = Math.min(1, MAX_WIDTH / video.videoWidth);
    this.canvas.width = Math.round(video.videoWidth * scale);
    this.canvas.height = Math.round(video.videoHeight * scale);
    this.canvas.getContext("2d").drawImage(video, 0, 0, this.canvas.width, this.canvas.height);
    return new Promise((resolve) => this.canvas.toBlob(resolve, "image/jpeg", QUALITY));
  }
}
