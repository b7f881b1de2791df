// The handler's call controls: resend / revoke the link, invite / cancel a specialist, end the
// session. The server-rendered forms still work without JavaScript; with it, each form becomes
// a control op on the call's socket (the JSON API when the socket is down), so the page and its
// call stay up. Results arrive as the socket's `status` push, so the panel never shows a status
// older than the newest push; a refusal arrives as an `error` and is shown to the handler.

import { api } from "./staff-api.js";
import { t } from "./i18n.js";
import { byTestId, el, show } from "./staff-dom.js";

const DISARM_AFTER_MS = 10000;
const OP_PAUSE_MS = 1000;
const OPS = {
  resend: { op: "resend_link", path: "/link" },
  revoke: { op: "revoke_link", path: "/link/revoke" },
  invite: { op: "invite_specialist", path: "/specialist" },
  cancel: { op: "cancel_specialist", path: "/specialist/cancel" },
};
const SPECIALISTS_EVERY_MS = 15000;

export class HandlerActions {
  /** @param {import("./staff-call.js").CallView} view */
  constructor(view) {
    this.view = view;
    this.root = view.root;
    this.base = `/api/sessions/${encodeURIComponent(view.sessionId)}`;
    this.disarmTimer = null;
    this.specialistTimer = null;
  }

  bind() {
    const forms = this.root.querySelectorAll("form[data-action]");
    for (const form of forms) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.onSubmit(form, event.submitter);
      });
    }
    this.bindEnd();
    this.bindSpecialistSelect();
  }

  async onSubmit(form, button) {
    const action = form.dataset.action;
    if (action === "end") {
      this.arm();
      return;
    }
    const spec = OPS[action];
    if (!spec) return;
    const args = {};
    if (action === "invite" && form.elements.username.value) args.username = form.elements.username.value;
    if (action === "resend" || action === "revoke") {
      // Unticked, earlier links' credentials end, the caller's in the call included.
      const keep = byTestId(this.root, "keep-caller");
      args.keep_caller = Boolean(keep && keep.checked);
    }
    if (this.view.send({ type: "control", op: spec.op, ...args })) {
      this.pause(button);
      return;
    }
    await this.busy(button, () => api("POST", `${this.base}${spec.path}`, args), t(`handler.done.${action}`));
  }

  /** A short pause after a socket op (it has no reply): one press, one text message. */
  pause(button) {
    if (!button) return;
    button.disabled = true;
    setTimeout(() => {
      button.disabled = false;
      this.view.refreshControls();
    }, OP_PAUSE_MS);
  }

  /** Run a request with its button disabled (no double texts), showing any refusal. */
  async busy(button, request, doneText) {
    if (button) button.disabled = true;
    try {
      await request();
      this.view.notice(doneText);
      return true;
    } catch (err) {
      this.view.showError(err.message);
      return false;
    } finally {
      if (button) button.disabled = false;
      this.view.refreshControls();
    }
  }

  // -- ending: a two-step button, never window.confirm (it blocks the page and the call) ----

  bindEnd() {
    this.endButton = byTestId(this.root, "end-session");
    this.confirmBox = byTestId(this.root, "end-confirm");
    this.confirmButton = byTestId(this.root, "end-session-confirm");
    this.keepButton = byTestId(this.root, "end-session-cancel");
    this.reasonSelect = byTestId(this.root, "end-reason");
    if (this.confirmButton) this.confirmButton.addEventListener("click", () => this.confirmEnd());
    if (this.keepButton) this.keepButton.addEventListener("click", () => this.disarm(true));
  }

  arm() {
    if (!this.confirmBox) return;
    show(this.confirmBox, true);
    this.endButton.setAttribute("aria-expanded", "true");
    this.endButton.dataset.armed = "true";
    this.confirmButton.focus();
    clearTimeout(this.disarmTimer);
    this.disarmTimer = setTimeout(() => this.disarm(false), DISARM_AFTER_MS);
  }

  disarm(refocus) {
    clearTimeout(this.disarmTimer);
    if (!this.confirmBox) return;
    show(this.confirmBox, false);
    this.endButton.setAttribute("aria-expanded", "false");
    delete this.endButton.dataset.armed;
    if (refocus) this.endButton.focus();
  }

  async confirmEnd() {
    clearTimeout(this.disarmTimer);
    const reason = this.reasonSelect ? this.reasonSelect.value : "ended";
    const ok = await this.busy(this.confirmButton, () => api("POST", `${this.base}/end`, { reason }), "");
    if (ok) {
      // The socket's bye normally says so first; this covers a socket that is down right now.
      this.view.finish("session_ended");
    } else {
      this.disarm(true);
    }
  }

  // -- the specialist list: who is available changes by the minute -------------------------

  bindSpecialistSelect() {
    this.select = byTestId(this.root, "specialist-select");
    if (!this.select) return;
    this.select.addEventListener("focus", () => this.refreshSpecialists());
    this.refreshSpecialists();
    this.specialistTimer = setInterval(() => this.refreshSpecialists(), SPECIALISTS_EVERY_MS);
  }

  async refreshSpecialists() {
    let body;
    try {
      body = await api("GET", "/api/specialists");
    } catch {
      return; // keep the list we have
    }
    const chosen = this.select.value;
    const options = [el("option", { value: "" }, t("handler.specialist.first_available"))];
    for (const person of body.specialists) {
      options.push(el("option", { value: person.username }, person.name));
    }
    // A specialist who just went unavailable stays listed while chosen, so the choice the
    // handler made is not silently changed; the server will refuse it with a clear message.
    if (chosen && !body.specialists.some((p) => p.username === chosen)) {
      const keep = [...this.select.options].find((o) => o.value === chosen);
      if (keep) options.push(el("option", { value: chosen }, t("handler.specialist.unavailable", { name: keep.textContent.replace(/ \(.*\)$/, "") })));
    }
    this.select.replaceChildren(...options);
    this.select.value = chosen;
  }

  stop() {
    clearTimeout(this.disarmTimer);
    clearInterval(this.specialistTimer);
    this.disarm(false);
  }
}
