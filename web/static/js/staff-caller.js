// The caller's side of the call as the caller's page reports it: the rung of the fallback
// ladder and why (said plainly: "the caller's network blocks direct connections and no TURN
// relay is configured"), what the phone lets the page capture (camera, microphone,
// location), whether the caller stays on the 999 phone line, and the still pictures that
// stand in for video when no video path connects.

import { t } from "./i18n.js";
import { api } from "./staff-api.js";
import { byTestId, clock, el, setState, show } from "./staff-dom.js";

const KINDS = ["camera", "microphone", "location"];

export class CallerPanel {
  /** @param {import("./staff-call.js").CallView} view */
  constructor(view) {
    this.view = view;
    const root = view.root;
    this.rungEl = byTestId(root, "caller-rung");
    this.reasonEl = byTestId(root, "caller-rung-reason");
    this.captureEl = byTestId(root, "caller-capture");
    this.modeEl = byTestId(root, "call-mode");
    this.modeButton = byTestId(root, "call-mode-toggle");
    this.caller = null;
    this.phoneLine = true;
    if (this.modeButton) this.modeButton.addEventListener("click", () => this.toggleMode());
  }

  /** From the server's status (docs/protocol.md 9.1: `caller`, `call`). */
  update(status) {
    if (!status) return;
    if (status.caller) this.caller = status.caller;
    if (status.call) this.phoneLine = status.call.phone_line !== false;
    this.render();
  }

  get rung() {
    return this.caller ? this.caller.rung : null;
  }

  /** The caller's audio is expected only off the phone line, with a working microphone. */
  get expectAudio() {
    return Boolean(!this.phoneLine && this.caller && this.caller.capture && this.caller.capture.microphone === "ok");
  }

  render() {
    const caller = this.caller || {};
    const rung = caller.rung || "none";
    setState(this.rungEl, rung, t(`staff.rung.${rung}`));
    const reason = caller.rung_reason && rung !== "full" ? t(`staff.reason.${caller.rung_reason}`) : "";
    if (this.reasonEl) {
      this.reasonEl.textContent = reason;
      this.reasonEl.dataset.reason = caller.rung_reason || "";
      show(this.reasonEl, Boolean(reason));
    }
    if (this.captureEl) {
      const capture = caller.capture || {};
      this.captureEl.replaceChildren(...KINDS.filter((kind) => capture[kind]).map((kind) => el(
        "li", { dataset: { kind, state: capture[kind] } },
        t(`staff.capture.${capture[kind]}`, { kind: t(`staff.capture.kind.${kind}`) }),
      )));
    }
    setState(this.modeEl, this.phoneLine ? "phone_line" : "full", t(this.phoneLine ? "staff.callmode.phone_line" : "staff.callmode.full"));
    if (this.modeButton) {
      this.modeButton.textContent = t(this.phoneLine ? "staff.callmode.switch_full" : "staff.callmode.switch_phone");
      this.modeButton.dataset.next = this.phoneLine ? "full" : "phone_line";
    }
  }

  async toggleMode() {
    const phoneLine = !this.phoneLine;
    if (this.view.send({ type: "control", op: "call_mode", phone_line: phoneLine })) return;
    try {
      const body = await api("POST", `/api/sessions/${encodeURIComponent(this.view.sessionId)}/call-mode`, { phone_line: phoneLine });
      this.update(body.status);
    } catch (err) {
      this.view.showError(err.message);
    }
  }
}

/** Still pictures from the caller's camera, shown over the video while they are the rung. */
export class StillsView {
  constructor(root, sessionId) {
    this.session = sessionId;
    this.img = byTestId(root, "still-picture");
    this.caption = byTestId(root, "still-caption");
    this.url = null;
    this.count = 0;
    this.loading = false;
    this.pending = null;
  }

  /** A `still` message: fetch the newest (one at a time; a newer one replaces a queued one). */
  async add(still) {
    if (!this.img) return;
    if (this.loading) {
      this.pending = still;
      return;
    }
    this.loading = true;
    try {
      const response = await fetch(`/api/sessions/${encodeURIComponent(this.session)}/stills/${encodeURIComponent(still.id)}`, {
        credentials: "same-origin", cache: "no-store",
      });
      if (response.ok) this.show(await response.blob(), still);
    } catch {
      // the next still will come
    } finally {
      this.loading = false;
      const next = this.pending;
      this.pending = null;
      if (next) this.add(next);
    }
  }

  show(blob, still) {
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = URL.createObjectURL(blob);
    this.img.src = this.url;
    this.img.dataset.evidence = still.id;
    this.img.dataset.sha256 = still.sha256;
    this.count += 1;
    this.img.dataset.count = String(this.count);
    if (this.caption) this.caption.textContent = t("staff.stills.caption", { time: clock(still.ts) });
  }

  /** Shown while the caller is on the stills rung; the live video takes over again after. */
  visible(on) {
    show(this.img, on && Boolean(this.url));
    show(this.caption, on && Boolean(this.url));
  }

  stop() {
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    this.visible(false);
  }
}
