// The fallback ladder: a call degrades by rungs, never to nothing.
//
//   full     live video as captured
//   reduced  live video at half the resolution and a capped bitrate: the bandwidth estimate
//            to the handler dropped (a weak cell); back to full when it recovers
//   stills   no video path connected within STILLS_AFTER_MS of the handler being there (UDP
//            blocked and no TURN, TURN blocked too), or the browser has no WebRTC: a camera
//            frame every few seconds over HTTPS (victim-stills.js); ICE keeps trying, and the
//            call goes back up as soon as a path connects
//   chat     no picture at all (the camera is refused, busy, missing or off): chat and location
//
// The page reports each change (`control` `rung`, with a reason); the server records it and
// shows it to the handler. docs/decisions.md says why the thresholds are what they are.

import { WEBRTC } from "./mesh.js";

const TICK_MS = 2000;
const STILLS_AFTER_MS = 8000;
const REDUCE_BELOW_BPS = 350000;
const RESTORE_ABOVE_BPS = 700000;
// On reduced video the estimate cannot show more than the capped stream needs, so every
// PROBE_EVERY_MS the cap is lifted, unannounced, for PROBE_MS: if the estimate climbs past
// RESTORE_ABOVE_BPS the page goes back to full video; if not, the cap returns.
const PROBE_EVERY_MS = 20000;
const PROBE_MS = 8000;
// Chrome's estimate starts near 300 kbit/s and takes a while to climb on a good link (over
// 20 s towards a Firefox peer): it is not judged until the link has been up this long.
const WARM_UP_MS = 12000;
// Half the resolution; the cap leaves room above the threshold so the estimate can recover.
const REDUCED = { maxBitrate: 500000, scaleResolutionDownBy: 2 };

export class Ladder extends EventTarget {
  /**
   * @param {{signal: import("./signal.js").Signal, mesh: import("./mesh.js").Mesh,
   *          media: () => import("./victim-media.js").LocalMedia|null,
   *          stills: import("./victim-stills.js").StillSender}} parts
   */
  constructor({ signal, mesh, media, stills }) {
    super();
    this.signal = signal;
    this.mesh = mesh;
    this.media = media;
    this.stills = stills;
    this.rung = null;
    this.reason = null;
    this.downSince = 0; // when the handler's link was first seen not connected
    this.upSince = 0; // when it was first seen connected (again)
    this.weakTicks = 0;
    this.strongTicks = 0;
    this.timer = null;
    this.busy = false;
    this.reducedAt = 0; // when the last probe ended (or reduced began)
    this.probeAt = 0; // when the running probe began; 0 when not probing
    signal.addEventListener("welcome", () => this.report());
  }

  start() {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.tick();
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.stills.stop();
  }

  /** The link to the handler (the one who must see the caller), if there is one. */
  handlerLink() {
    for (const link of this.mesh.peers.values()) if (link.role === "handler") return link;
    return null;
  }

  async tick() {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.decide();
    } catch {
      // getStats on a closing connection: the next tick decides
    } finally {
      this.busy = false;
    }
  }

  async decide() {
    const media = this.media();
    const camera = media && media.video && media.video.readyState === "live";
    if (!camera) return this.set("chat", "camera_unavailable");
    if (!WEBRTC) return this.set("stills", "no_webrtc");
    const link = this.handlerLink();
    if (!link) {
      this.downSince = 0;
      return; // nobody to send to yet: nothing to judge
    }
    if (link.pc.connectionState !== "connected") {
      this.upSince = 0;
      if (!this.downSince) this.downSince = Date.now();
      if (this.rung === "stills" || Date.now() - this.downSince >= STILLS_AFTER_MS) {
        return this.set("stills", this.whyNoPath(link));
      }
      return;
    }
    this.downSince = 0;
    if (!this.upSince) this.upSince = Date.now();
    const { availableOutgoingBitrate: bps } = await link.sending();
    if (typeof bps === "number" && Date.now() - this.upSince >= WARM_UP_MS) {
      this.weakTicks = bps < REDUCE_BELOW_BPS ? this.weakTicks + 1 : 0;
      this.strongTicks = bps > RESTORE_ABOVE_BPS ? this.strongTicks + 1 : 0;
    }
    if (this.rung === "reduced") return this.probe();
    if (this.weakTicks >= 2) return this.set("reduced", "weak_network");
    return this.set("full", this.rung && this.rung !== "full" ? "recovered" : null);
  }

  /** On reduced video: now and then, lift the cap and see whether the estimate follows. */
  async probe() {
    const now = Date.now();
    if (this.probeAt) {
      if (this.strongTicks >= 2) {
        this.probeAt = 0;
        return this.set("full", "recovered");
      }
      if (now - this.probeAt >= PROBE_MS) {
        this.probeAt = 0;
        this.reducedAt = now;
        await this.mesh.limitVideo(REDUCED);
      }
      return;
    }
    if (now - this.reducedAt >= PROBE_EVERY_MS) {
      this.probeAt = now;
      this.strongTicks = 0;
      await this.mesh.limitVideo(null);
    }
  }

  /** Why no media path: no TURN relay configured, the relay unreachable, or neither helped. */
  whyNoPath(link) {
    const servers = this.signal.iceServers || [];
    const turn = servers.some((s) => [].concat(s.urls || []).some((url) => /^turns?:/.test(url)));
    if (!turn) return "no_turn";
    return link.gatheredTypes.has("relay") ? "no_path" : "turn_unreachable";
  }

  async set(rung, reason) {
    if (rung === this.rung && reason === this.reason) return;
    if (rung === this.rung && rung === "full") return; // "recovered" once is enough
    this.rung = rung;
    this.reason = reason;
    this.probeAt = 0;
    if (rung === "reduced") this.reducedAt = Date.now();
    if (rung === "stills") this.stills.start();
    else this.stills.stop();
    await this.mesh.limitVideo(rung === "reduced" ? REDUCED : null);
    this.report();
    this.dispatchEvent(new CustomEvent("rung", { detail: { rung, reason } }));
  }

  report() {
    if (this.rung) this.signal.send({ type: "control", op: "rung", rung: this.rung, reason: this.reason });
  }
}
