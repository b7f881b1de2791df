// Live connection quality to the caller, sampled from the peer connection once a second:
// round trip (ms), packet loss over the last second (%), received bitrate (kbit/s), resolution.

import { byTestId } from "./staff-dom.js";

export class QualityPanel {
  constructor(root) {
    this.rtt = byTestId(root, "quality-rtt");
    this.loss = byTestId(root, "quality-loss");
    this.bitrate = byTestId(root, "quality-bitrate");
    this.resolution = byTestId(root, "quality-resolution");
    this.path = byTestId(root, "quality-path");
    this.previous = null;
    this.latest = null;
    this.busy = false;
  }

  /** Sample `link` (the caller's) and show it; returns the sample, null without a link, or
   *  undefined if the previous sample is still being taken (nothing new to judge). */
  async sample(link) {
    if (!link) {
      this.clear();
      return null;
    }
    if (this.busy) return undefined; // getStats can be slow on a struggling machine: skip
    this.busy = true;
    try {
      const q = await link.quality();
      this.latest = q;
      const before = this.previous && this.previous.pid === link.pid ? this.previous.q : null;
      this.previous = { pid: link.pid, q };
      set(this.rtt, q.rtt === null ? null : Math.round(q.rtt * 1000), (v) => `${v} ms`);
      if (before) {
        const lost = Math.max(0, q.lost - before.lost);
        const received = Math.max(0, q.received - before.received);
        const lossPct = lost + received > 0 ? (100 * lost) / (lost + received) : 0;
        set(this.loss, Math.round(lossPct * 10) / 10, (v) => `${v.toFixed(1)} %`);
        const ms = q.at - before.at;
        // bits per millisecond is kilobits per second.
        const kbps = ms > 0 ? Math.max(0, Math.round(((q.bytes - before.bytes) * 8) / ms)) : 0;
        set(this.bitrate, kbps, (v) => `${v} kbit/s`);
      }
      set(this.resolution, q.width && q.height ? `${q.width}x${q.height}` : null, (v) => v);
      set(this.path, q.path && q.path.local ? pathText(q.path) : null, (v) => v);
      if (this.path && q.path) {
        this.path.dataset.local = q.path.local || "";
        this.path.dataset.remote = q.path.remote || "";
        this.path.dataset.relayProtocol = q.path.relayProtocol || "";
      }
      return q;
    } catch {
      // The connection closed between samples; the next tick sees the new state.
      return null;
    } finally {
      this.busy = false;
    }
  }

  clear() {
    this.previous = null;
    this.latest = null;
    for (const node of [this.rtt, this.loss, this.bitrate, this.resolution, this.path]) set(node, null);
  }
}

/** "direct (host)", "through the TURN relay over TCP": which path the media takes. */
function pathText({ local, remote, relayProtocol }) {
  if (local === "relay" || remote === "relay") {
    return relayProtocol && local === "relay" ? `TURN relay (${relayProtocol.toUpperCase()})` : "TURN relay";
  }
  return `direct (${local} to ${remote})`;
}

function set(node, value, format) {
  if (!node) return;
  if (value === null || value === undefined) {
    node.textContent = "–";
    delete node.dataset.value;
    return;
  }
  node.dataset.value = String(value);
  node.textContent = format(value);
}
