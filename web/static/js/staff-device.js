// The handler's prompt for a different device trying to join as the caller (decision 38).
// The server never lets a second device replace the caller in the call by itself: it waits,
// and only the handler is told (`caller_device`). Admit lets it in (the device in the call is
// replaced); Refuse closes it and ends its credential. Each answer goes over the call's socket,
// or the JSON API when the socket is down; the server's `caller_device` reply clears it.

import { api } from "./staff-api.js";
import { t } from "./i18n.js";
import { byTestId, clock, el, show } from "./staff-dom.js";

const OUTCOMES = new Set(["admitted", "refused", "withdrawn", "ended"]);

export class DevicePrompts {
  /** @param {import("./staff-call.js").CallView} view */
  constructor(view) {
    this.view = view;
    this.box = byTestId(view.root, "device-prompts");
    this.list = byTestId(view.root, "device-list");
    this.path = `/api/sessions/${encodeURIComponent(view.sessionId)}/caller-device`;
    this.waiting = new Map(); // device id -> its list item
  }

  /** A `caller_device` message from the server. */
  update(message) {
    if (!this.box || !this.list || typeof message.device !== "string") return;
    if (message.op === "waiting") {
      this.add(message);
    } else if (OUTCOMES.has(message.op)) {
      const known = this.waiting.has(message.device);
      this.remove(message.device);
      if (known) this.view.notice(t(`handler.device.${message.op}`));
    }
  }

  add(message) {
    if (this.waiting.has(message.device)) return;
    const admit = el("button", { type: "button", dataset: { testid: "device-admit", device: message.device } }, t("handler.device.admit"));
    const refuse = el("button", { type: "button", class: "secondary", dataset: { testid: "device-refuse", device: message.device } }, t("handler.device.refuse"));
    admit.addEventListener("click", () => this.answer(message.device, "admit", admit, refuse));
    refuse.addEventListener("click", () => this.answer(message.device, "refuse", admit, refuse));
    const since = typeof message.since === "number" ? t("handler.device.since", { time: clock(message.since) }) : "";
    const item = el("li", { dataset: { testid: "device-prompt", device: message.device } },
      el("span", {}, since), " ", admit, " ", refuse);
    this.waiting.set(message.device, item);
    this.list.append(item);
    show(this.box, true);
    admit.focus();
  }

  remove(device) {
    const item = this.waiting.get(device);
    if (item) item.remove();
    this.waiting.delete(device);
    show(this.box, this.waiting.size > 0);
  }

  async answer(device, decision, ...buttons) {
    for (const button of buttons) button.disabled = true;
    const op = decision === "admit" ? "admit_device" : "refuse_device";
    if (this.view.send({ type: "control", op, device })) return; // the reply clears it
    try {
      await api("POST", this.path, { device, decision });
      this.remove(device);
      this.view.notice(t(decision === "admit" ? "handler.device.admitted" : "handler.device.refused"));
    } catch (err) {
      for (const button of buttons) button.disabled = false;
      this.view.showError(err.message);
    }
  }

  /** The call is over: nothing can be answered any more. */
  clear() {
    for (const device of [...this.waiting.keys()]) this.remove(device);
  }
}
