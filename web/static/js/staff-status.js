// The call view's status panel: the caller's link, the text message, the specialist invitation
// and the session timeline, all from the server's `status` message (docs/protocol.md 9.1).

import { t } from "./i18n.js";
import { byTestId, clock, duration, el, setState, show } from "./staff-dom.js";

const TIMELINE = ["created", "invited", "opened", "joined", "connected", "ended"];

/**
 * One word for where the caller has got to. Once the caller has joined, the session's own
 * progress says more than the link; but if they have gone and a new link was sent, show that.
 */
export function linkState(status, victimPresent) {
  const session = status.session || {};
  const invite = status.invite;
  if (session.state === "ended") return "ended";
  if (session.state === "joined" || session.state === "connected") {
    if (victimPresent || !invite || invite.state === "redeemed") return session.state;
    return invite.state;
  }
  return invite ? invite.state : "none";
}

export class StatusPanel {
  constructor(root) {
    this.root = root;
    this.status = null;
    this.victimPresent = false;
    this.linkEl = byTestId(root, "link-state");
    this.smsEl = byTestId(root, "sms-status");
    this.specialistEl = byTestId(root, "specialist-state");
    this.cancelButton = byTestId(root, "cancel-specialist");
    this.revokeButton = byTestId(root, "revoke-link");
    this.timelineEl = byTestId(root, "timeline");
  }

  update(status) {
    if (status && status.session) this.status = status;
    this.render();
  }

  /** The session ended (a bye, or our own end): show it without waiting for a status. */
  markEnded() {
    if (this.status) this.status = { ...this.status, session: { ...this.status.session, state: "ended" } };
    else setState(this.linkEl, "ended", t("staff.link.ended"));
    this.render();
  }

  setVictimPresent(present) {
    this.victimPresent = present;
    this.render();
  }

  render() {
    const status = this.status;
    if (!status) return;
    const link = linkState(status, this.victimPresent);
    setState(this.linkEl, link, t(`staff.link.${link}`));
    const invite = status.invite;
    const sms = invite ? invite.sms_status : "none";
    let smsText = t(`staff.sms.${sms}`);
    if (invite && invite.sms_error) smsText += ` (${invite.sms_error})`;
    setState(this.smsEl, sms, smsText);
    if (this.revokeButton) {
      this.revokeButton.disabled = !(invite && (invite.state === "sent" || invite.state === "opened"));
    }
    this.renderSpecialist();
    this.renderTimeline();
  }

  /** Also called every second, so the ringing time counts. */
  renderSpecialist() {
    const specialist = this.status && this.status.specialist;
    if (!this.specialistEl) return;
    if (!specialist) {
      setState(this.specialistEl, "none", t("staff.specialist.none"));
      show(this.cancelButton, false);
      return;
    }
    const values = {
      name: specialist.name,
      waited: duration(Date.now() / 1000 - specialist.since),
    };
    setState(this.specialistEl, specialist.state, t(`staff.specialist.${specialist.state}`, values));
    show(this.cancelButton, specialist.state === "ringing");
  }

  renderTimeline() {
    if (!this.timelineEl) return;
    const timeline = (this.status.session && this.status.session.timeline) || {};
    const items = TIMELINE.filter((step) => timeline[step]).map((step) =>
      el("li", { dataset: { step } }, el("time", {}, clock(timeline[step])), " ", t(`staff.timeline.${step}`)),
    );
    this.timelineEl.replaceChildren(...items);
  }
}
