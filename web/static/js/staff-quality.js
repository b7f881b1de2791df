// Live connection quality to the caller, sampled from the peer connection once a second:
// round trip (ms), packet loss over the last second (%), received bitrate (kbit/s), resolution.

import { byTestId } from "./staff-dom.js";

export class QualityPanel {
  constructor(root) {
    this.rtt = byTestId(root, "quality-rtt");
    this.loss = byTestId(root, "quality-loss");
    this.bitrate = byTestId(root, "quality-bitrate");
    this.resolution = byTestId(root, "quality-resolution");
    this.previous = null;
    this.busy = false;
  }

  async sample(link) {
    if (!link) {
      this.clear();
      return;
    }
    if (this.busy) return; // getStats can be slow on a struggling machine; never pile up
    this.busy = true;
    try {
      const q = await link.quality();
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
    } catch {
      // The connection closed between samples; the next tick sees the new state.
    } finally {
      this.busy = false;
    }
  }

  clear() {
    this.previous = null;
    for (const node of [this.rtt, this.loss, this.bitrate, this.resolution]) set(node, null);
  }
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
