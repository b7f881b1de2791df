// The staff call view: one session seen by its handler, a specialist who accepted, or a
// supervisor observing. It joins the session's signalling (Signal({session})), keeps the media
// mesh, and drives the panels. The page's markup (session.html, #call-view) is the contract;
// this module only fills it in.

import { Signal } from "./signal.js";
import { Mesh } from "./mesh.js";
import { t, translate } from "./i18n.js";
import { byTestId, el, setState, show } from "./staff-dom.js";
import { StatusPanel } from "./staff-status.js";
import { MessageLog, bindCompose } from "./staff-chat.js";
import { LocationPanel } from "./staff-location.js";
import { QualityPanel } from "./staff-quality.js";
import { MicrophoneControl, RemoteMedia, openMicrophone } from "./staff-media.js";
import { HandlerActions } from "./staff-actions.js";
import { DevicePrompts } from "./staff-device.js";
import { CallerArrival } from "./staff-arrival.js";
import { CallerPanel, StillsView } from "./staff-caller.js";

const TALKING_ROLES = new Set(["handler", "specialist"]);
const NOTICE_MS = 6000;
const ERROR_MS = 12000;

export class CallView {
  /**
   * @param {HTMLElement} root the #call-view section
   * @param {{onFinished?: (reason: string) => void, closable?: boolean}} options
   */
  constructor(root, options = {}) {
    this.root = root;
    this.options = options;
    this.sessionId = root.dataset.session;
    this.role = root.dataset.role;
    this.people = new Map(); // pid -> {role, name, state}
    this.finished = false;
    this.leaving = false;
    this.signal = null;
    this.mesh = null;
    this.timer = null;
    this.errorTimer = null;
    this.baseTitle = document.title;
  }

  /** Join the call. Returns false when this page has no live call to join. */
  start() {
    if (this.root.dataset.live !== "1" || !this.sessionId) return false;
    translate(this.root);
    const root = this.root;
    this.status = new StatusPanel(root);
    this.media = new RemoteMedia(root);
    this.mic = new MicrophoneControl(root);
    this.quality = new QualityPanel(root);
    this.location = new LocationPanel(byTestId(root, "location-panel"), root.dataset.mapTemplate);
    const ownPid = () => (this.signal ? this.signal.pid : null);
    this.chat = new MessageLog(byTestId(root, "chat-log"), "chat-message", ownPid);
    this.advice = new MessageLog(byTestId(root, "advice-log"), "advice-message", ownPid);
    this.callerPanel = new CallerPanel(this);
    this.stills = new StillsView(root, this.sessionId);
    // Only the handler's view of what arrives goes to the server (the sessions list, the
    // record); a specialist or observer shows their own.
    this.arrival = new CallerArrival(root, this.role === "handler"
      ? (state) => this.send({ type: "control", op: "caller_media", state })
      : null);
    this.joinedBefore = false;

    this.signal = new Signal({ session: this.sessionId });
    // Staff connect to everyone in the call: the caller for video, other staff for voices.
    this.mesh = new Mesh(this.signal, null, () => true);
    this.wireSignal();
    this.wireMesh();
    this.wireControls();
    this.signal.start();
    if (TALKING_ROLES.has(this.role)) this.startMicrophone();
    this.timer = setInterval(() => this.tick(), 1000);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) document.title = this.baseTitle;
    });
    return true;
  }

  wireSignal() {
    const s = this.signal;
    s.addEventListener("state", (e) => {
      const { state, reason } = e.detail;
      setState(byTestId(this.root, "connection-state"), state, t(`staff.connection.${state}`));
      if (state === "ended") this.finish(reason || (this.leaving ? "left" : "closed"));
    });
    s.addEventListener("welcome", (e) => this.onWelcome(e.detail));
    s.addEventListener("peer", (e) => this.onPeer(e.detail));
    s.addEventListener("status", (e) => this.onStatus(e.detail));
    s.addEventListener("still", (e) => this.stills.add(e.detail));
    s.addEventListener("chat", (e) => {
      this.chat.add(e.detail);
      if (e.detail.role === "victim") this.flagTitle();
    });
    s.addEventListener("advice", (e) => this.advice.add(e.detail));
    s.addEventListener("location", (e) => this.location.update(e.detail));
    s.addEventListener("error", (e) => this.onError(e.detail));
  }

  wireMesh() {
    this.mesh.addEventListener("track", (e) => {
      const { pid, track, stream } = e.detail;
      const role = this.roleOf(pid, e.detail.role, stream);
      if (role === "victim") this.media.showVictim(pid, stream);
      else if (track.kind === "audio") this.media.addStaffAudio(pid, role, stream);
    });
    this.mesh.addEventListener("peer-gone", (e) => this.media.removePeer(e.detail.pid));
    // The caller's path went silent: probably the caller's network, but ask our socket too.
    this.mesh.addEventListener("silent", () => this.signal.nudge());
  }

  wireControls() {
    const root = this.root;
    const notConnected = () => this.showError(t("staff.error.not_connected"));
    bindCompose(byTestId(root, "chat-form"), byTestId(root, "chat-input"),
      (text) => this.say({ type: "chat", text }), notConnected);
    bindCompose(byTestId(root, "advice-form"), byTestId(root, "advice-input"),
      (text) => this.say({ type: "advice", text }), notConnected);
    for (const button of root.querySelectorAll("[data-canned]")) {
      button.addEventListener("click", () => {
        if (!this.say({ type: "chat", canned: button.dataset.canned })) notConnected();
      });
    }
    const leave = byTestId(root, "leave-call");
    if (leave) leave.addEventListener("click", () => this.leave());
    const close = byTestId(root, "close-call");
    if (close) close.addEventListener("click", () => this.options.onClose && this.options.onClose());
    if (this.role === "handler") {
      this.actions = new HandlerActions(this);
      this.actions.bind();
      this.devices = new DevicePrompts(this);
      this.signal.addEventListener("caller_device", (e) => this.devices.update(e.detail));
    }
  }

  send(message) {
    return !this.finished && this.signal.send(message);
  }

  /** Chat or advice: only while connected (else the staff member is told), and then sent so
   *  that a socket dying under it cannot lose it (signal.js sendReliably). */
  say(message) {
    if (this.finished || this.signal.state !== "connected") return false;
    this.signal.sendReliably(message);
    return true;
  }

  async startMicrophone() {
    const { stream, reason } = await openMicrophone();
    if (this.finished) {
      if (stream) for (const track of stream.getTracks()) track.stop();
      return;
    }
    this.mic.use(stream, reason);
    if (stream) await this.mesh.setLocal(stream);
  }

  // -- who is in the call ------------------------------------------------------------------

  onWelcome(welcome) {
    if (welcome.fresh) this.people.clear();
    for (const peer of welcome.peers) this.people.set(peer.pid, peer);
    if (welcome.status) this.onStatus(welcome.status);
    this.arrival.forget(); // a new socket: tell the server again what arrives
    this.renderPeople();
  }

  onStatus(status) {
    this.status.update(status);
    this.callerPanel.update(status);
    const timeline = status.session && status.session.timeline;
    if (timeline && timeline.joined) this.joinedBefore = true;
  }

  onPeer(message) {
    if (message.op === "left") {
      this.people.delete(message.pid);
    } else {
      const known = this.people.get(message.pid) || {};
      this.people.set(message.pid, { ...known, ...message });
    }
    if (message.role === "victim") this.media.victimAway(message.op === "updated" && message.state === "away");
    this.renderPeople();
  }

  roleOf(pid, fallback, stream) {
    const known = this.people.get(pid);
    if (known) return known.role;
    // A link made from a signal that outran its peer message: only the caller sends video.
    if (fallback && fallback !== "unknown") return fallback;
    return stream && stream.getVideoTracks().length ? "victim" : "unknown";
  }

  victim() {
    for (const [pid, peer] of this.people) if (peer.role === "victim") return { pid, ...peer };
    return null;
  }

  renderPeople() {
    const victim = this.victim();
    const presence = victim ? victim.state || "present" : "absent";
    setState(byTestId(this.root, "caller-presence"), presence, t(`staff.presence.${presence}`));
    this.status.setVictimPresent(presence === "present");
    const list = byTestId(this.root, "participants");
    if (!list) return;
    const items = [el("li", { "data-testid": "participant", dataset: { role: this.role, state: "present", self: "true" } },
      t("staff.people.you", { role: t(`staff.role.${this.role}`) }))];
    for (const peer of this.people.values()) {
      const name = peer.role === "victim" ? t("staff.role.victim") : `${peer.name} (${t(`staff.role.${peer.role}`)})`;
      items.push(el("li", { "data-testid": "participant", dataset: { role: peer.role, state: peer.state || "present" } },
        name, " ", el("span", { class: "badge", dataset: { state: peer.state || "present" } }, t(`staff.presence.${peer.state || "present"}`))));
    }
    list.replaceChildren(...items);
  }

  // -- every second: quality, the age of the location, the ringing time ---------------------

  tick() {
    const victim = this.victim();
    const link = victim ? this.mesh.peers.get(victim.pid) : null;
    this.quality.sample(link || null).then((quality) => this.arrived(victim, quality));
    this.location.tick();
    this.status.renderSpecialist();
  }

  /** What arrives from the caller, said as it is (staff-arrival.js). */
  arrived(victim, quality) {
    if (this.finished || quality === undefined) return;
    if (victim) this.joinedBefore = true;
    const rung = this.callerPanel.rung;
    this.arrival.update({
      presence: victim ? victim.state || "present" : "absent",
      joinedBefore: this.joinedBefore,
      pid: victim ? victim.pid : null,
      quality,
      rung,
      expectAudio: this.callerPanel.expectAudio,
    });
    this.stills.visible(rung === "stills");
    this.root.dataset.callerMedia = this.arrival.state || "";
  }

  // -- messages for the staff member --------------------------------------------------------

  onError(error) {
    if (!this.signal.pid) {
      // The hello was refused (no place in this call): nothing will change by retrying.
      this.finish(error.code === "session_ended" ? "session_ended" : "refused", error.message);
      return;
    }
    this.showError(error.message || t("staff.error.generic"));
  }

  showError(message) {
    const box = byTestId(this.root, "call-error");
    if (!box) return;
    box.textContent = message;
    show(box, true);
    clearTimeout(this.errorTimer);
    this.errorTimer = setTimeout(() => show(box, false), ERROR_MS);
  }

  notice(message) {
    if (!message) return;
    show(byTestId(this.root, "call-error"), false);
    const box = byTestId(this.root, "call-notice");
    if (!box) return;
    box.textContent = message;
    show(box, true);
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => show(box, false), NOTICE_MS);
  }

  flagTitle() {
    if (document.hidden) document.title = `${t("staff.title.new_message")} · ${this.baseTitle}`;
  }

  /** After a control was busy: the status decides what is usable again. */
  refreshControls() {
    if (this.finished) this.disableControls();
    else this.status.render();
  }

  leave() {
    this.leaving = true;
    // close() sends control leave, then closes the socket for good.
    this.signal.close(true);
  }

  /** The call is over for this page: stop media and timers, say why, keep the logs readable. */
  finish(reason, message) {
    if (this.finished) return;
    this.finished = true;
    clearInterval(this.timer);
    if (this.signal && !this.signal.ended) this.signal.close(false);
    if (this.mesh) this.mesh.close();
    if (this.mic) this.mic.stop();
    if (this.media) this.media.stop();
    if (this.quality) this.quality.clear();
    if (this.devices) this.devices.clear();
    if (this.actions) this.actions.stop();
    if (this.stills) this.stills.stop();
    setState(byTestId(this.root, "connection-state"), "ended", t("staff.connection.ended"));
    if (reason === "signed_out") {
      location.assign("/login");
      return;
    }
    // Nobody is connected any more: say so rather than leave the last live states showing.
    this.people.clear();
    this.renderPeople();
    if (reason === "session_ended") {
      this.status.markEnded();
      show(byTestId(this.root, "session-ended"), true);
    } else {
      const closed = byTestId(this.root, "call-closed");
      if (closed) {
        const key = `staff.closed.${reason}`;
        const known = t(key) !== key;
        closed.textContent = message || t(known ? key : "staff.closed.other", { reason });
        closed.dataset.reason = reason;
        show(closed, true);
      }
    }
    this.root.dataset.finished = reason;
    this.disableControls();
    const closeRow = this.root.querySelector(".close-call");
    if (closeRow && this.options.closable) show(closeRow, true);
    if (this.options.onFinished) this.options.onFinished(reason);
  }

  disableControls() {
    for (const node of this.root.querySelectorAll(".call-grid button, .call-grid input, .call-grid select")) {
      node.disabled = true;
    }
    show(byTestId(this.root, "end-confirm"), false);
  }
}
