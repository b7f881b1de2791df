// What arrives from the caller, said truthfully: "Video is flowing" only while frames are
// being decoded, "Picture frozen for 12 s" when they stop, "no sound" when the caller's audio
// stops arriving, "reconnecting" while the path or the socket is being restored, "left" once
// the caller is gone. Sampled once a second from getStats (framesDecoded, audio packets), the
// caller's presence on the socket, and the rung the caller's page reports.
//
// The handler's page tells the server what it sees (`control` `caller_media`), so the
// sessions list and the others in the call show the same; other staff only show their own.

import { t } from "./i18n.js";
import { byTestId, setState } from "./staff-dom.js";

const FROZEN_AFTER_MS = 3000; // no new frame for this long: frozen
const SILENT_AFTER_MS = 3000; // no audio packet for this long: no sound
const REPORT_AFTER_MS = 2000; // a state must hold this long before the server is told

export class CallerArrival {
  /**
   * @param {HTMLElement} root the call view
   * @param {(state: string) => void} report tells the server (handler only), or null
   */
  constructor(root, report) {
    this.node = byTestId(root, "caller-media");
    this.report = report;
    this.lastFrames = 0;
    this.lastFrameAt = 0;
    this.lastPackets = 0;
    this.lastPacketAt = 0;
    this.everDecoded = false;
    this.pid = null;
    this.state = null;
    this.candidate = null; // {state, since}: waiting to hold before it is reported
    this.reported = null;
  }

  /** Forget what was counted (a new caller page, a new peer connection). */
  reset(pid) {
    this.pid = pid;
    this.lastFrames = this.lastPackets = 0;
    this.lastFrameAt = this.lastPacketAt = 0;
    this.everDecoded = false;
  }

  /**
   * One sample. `caller` is the call view's view of the caller:
   * {presence: absent|present|away, joinedBefore, pid, quality (Link.quality() or null),
   *  rung, expectAudio}.
   */
  update(caller, now = performance.now()) {
    const state = this.classify(caller, now);
    this.render(state, now);
    this.tell(state, now);
  }

  classify({ presence, joinedBefore, pid, quality, rung, expectAudio }, now) {
    if (presence === "absent") return { state: joinedBefore ? "left" : "not_joined" };
    if (pid !== this.pid) this.reset(pid);
    if (presence === "away") return { state: "reconnecting" };
    if (rung === "stills") return { state: "stills" };
    if (rung === "chat") return { state: "chat_only" };
    if (!quality) return { state: "waiting" };
    // "checking" during an ICE restart is no loss: the old path carries on meanwhile.
    const iceLost = ["disconnected", "failed"].includes(quality.ice);
    if (quality.framesDecoded > this.lastFrames) {
      this.lastFrames = quality.framesDecoded;
      this.lastFrameAt = now;
      this.everDecoded = true;
    } else if (quality.framesDecoded < this.lastFrames) {
      this.lastFrames = quality.framesDecoded; // a renegotiated stream counts from zero
    }
    if (quality.audioPackets > this.lastPackets) {
      this.lastPackets = quality.audioPackets;
      this.lastPacketAt = now;
    } else if (quality.audioPackets < this.lastPackets) {
      this.lastPackets = quality.audioPackets;
    }
    if (iceLost) return { state: "reconnecting" };
    if (!this.everDecoded) return { state: "waiting" };
    const still = now - this.lastFrameAt;
    if (still >= FROZEN_AFTER_MS) return { state: "frozen", seconds: Math.floor(still / 1000) };
    if (expectAudio && now - this.lastPacketAt >= SILENT_AFTER_MS) return { state: "no_sound" };
    return { state: "flowing" };
  }

  render({ state, seconds }) {
    this.state = state;
    if (!this.node) return;
    setState(this.node, state, t(`staff.caller.${state}`, { seconds: seconds ?? 0 }));
    if (seconds !== undefined) this.node.dataset.seconds = String(seconds);
    else delete this.node.dataset.seconds;
  }

  /** The media part of the state, once it has held for a moment (no flapping on a jittery
   *  link); the server already knows presence. */
  tell({ state }, now) {
    if (!this.report) return;
    const media = { stills: "no_video", chat_only: "no_video" }[state] || state;
    if (!["waiting", "flowing", "frozen", "no_sound", "reconnecting", "no_video"].includes(media)) return;
    if (!this.candidate || this.candidate.state !== media) this.candidate = { state: media, since: now };
    if (media !== this.reported && now - this.candidate.since >= REPORT_AFTER_MS) {
      if (this.report(media)) this.reported = media;
    }
  }

  /** Our socket came back or was replaced: say it again. */
  forget() {
    this.reported = null;
  }
}
