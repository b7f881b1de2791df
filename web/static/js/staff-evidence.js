// Snapshots for the handler: one press draws the caller's current video frame to a canvas and
// stores it as evidence (POST /api/sessions/{id}/snapshots, raw JPEG body). The server answers
// with the stored file's sha256, which the list shows so staff can match it to the record.

import { t } from "./i18n.js";
import { csrfToken } from "./staff-api.js";
import { byTestId, clock, el, setState } from "./staff-dom.js";

const QUALITY = 0.9;

export class SnapshotPanel {
  constructor(root, sessionId) {
    this.root = root;
    this.session = sessionId;
    this.button = byTestId(root, "snapshot");
    this.video = byTestId(root, "remote-video");
    this.list = byTestId(root, "snapshot-list");
    this.status = byTestId(root, "snapshot-status");
  }

  start() {
    this.button.addEventListener("click", () => this.take());
  }

  /** The frame as a JPEG blob, or null while no caller video is playing. */
  frame() {
    const { videoWidth: width, videoHeight: height } = this.video;
    if (!width || !height) return Promise.resolve(null);
    const canvas = el("canvas", { width, height });
    canvas.getContext("2d").drawImage(this.video, 0, 0, width, height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", QUALITY));
  }

  async take() {
    this.button.disabled = true; // one press, one snapshot
    try {
      const blob = await this.frame();
      if (!blob) {
        setState(this.status, "failed", t("handler.snapshot.no_video"));
        return;
      }
      setState(this.status, "saving", t("handler.snapshot.saving"));
      const saved = await this.send(blob);
      this.add(saved);
      setState(this.status, "saved", t("handler.snapshot.saved"));
    } catch (error) {
      setState(this.status, "failed", error.message || t("handler.snapshot.failed"));
    } finally {
      this.button.disabled = false;
    }
  }

  async send(blob) {
    let response;
    try {
      response = await fetch(`/api/sessions/${encodeURIComponent(this.session)}/snapshots`, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json", "Content-Type": "image/jpeg", "X-CSRF-Token": csrfToken() },
        body: blob,
      });
    } catch {
      throw new Error(t("staff.error.network"));
    }
    const data = await response.json().catch(() => null);
    if (!response.ok || !data) throw new Error((data && data.message) || t("handler.snapshot.failed"));
    return data;
  }

  add(saved) {
    const href = `/api/sessions/${encodeURIComponent(this.session)}/evidence/${encodeURIComponent(saved.id)}`;
    const when = clock(Date.now() / 1000);
    const item = el("li", { dataset: { sha256: saved.sha256, evidence: saved.id } },
      el("a", { href }, t("handler.snapshot.item", { time: when })),
      " ", el("code", { class: "hash", title: saved.sha256 }, `SHA-256 ${saved.sha256.slice(0, 12)}…`));
    this.list.append(item);
  }
}
