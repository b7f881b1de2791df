// Entry for the specialist's desk (specialist.html): availability, the invitation alert (seen
// and heard), accept / decline, and the call itself shown on this same page, so the desk's
// lobby socket stays open and the accept click still counts as the gesture that allows sound.

import { setLanguage, t } from "./i18n.js";
import { Signal } from "./signal.js";
import { api } from "./staff-api.js";
import { byTestId, duration, setState, show } from "./staff-dom.js";
import { RingTone } from "./staff-tone.js";
import { CallView } from "./staff-call.js";
import { SessionList } from "./staff-sessions.js";

try {
  await setLanguage(document.documentElement.lang || "en");
} catch {
  // Without the catalogue strings fall back to their keys; the desk still works.
}

const desk = document.getElementById("desk");
const toggle = byTestId(desk, "availability-toggle");
const alertBox = byTestId(desk, "invitation-alert");
const acceptButton = byTestId(desk, "accept-invitation");
const declineButton = byTestId(desk, "decline-invitation");
const noticeBox = byTestId(desk, "invitation-notice");
const soundHint = byTestId(desk, "sound-hint");
const slot = document.getElementById("call-slot");
const baseTitle = document.title;

const tone = new RingTone();
const ringing = new Map(); // invitation id -> the `ringing` invitation message
let shownId = null; // the invitation the alert shows
let answering = null; // {id, accept} while our answer is on its way
let call = null; // the CallView of the accepted session
let noticeTimer = null;

// The server's list is for pages without JavaScript; the alert replaces it here.
show(desk.querySelector(".ringing-list"), false);

// -- sound: any click or key press lets the ring be heard -------------------------------------

async function unlockSound() {
  tone.unlock();
  // resume() settles a moment after the gesture.
  setTimeout(renderSoundHint, 100);
}
document.addEventListener("pointerdown", unlockSound, { capture: true });
document.addEventListener("keydown", unlockSound, { capture: true });

function renderSoundHint() {
  const needed = available() || ringing.size > 0;
  show(soundHint, needed && !tone.audible);
  if (alertBox) alertBox.dataset.tone = tone.ringing ? (tone.audible ? "playing" : "blocked") : "off";
}

// -- availability ------------------------------------------------------------------------------

function available() {
  return toggle.getAttribute("aria-pressed") === "true";
}

function setAvailable(value) {
  toggle.setAttribute("aria-pressed", String(value));
  const form = toggle.closest("form");
  form.elements.available.value = value ? "0" : "1"; // what the no-JS form would post next
  setState(byTestId(desk, "availability-state"), value ? "available" : "unavailable",
    t(value ? "specialist.availability.on" : "specialist.availability.off"));
  renderSoundHint();
}

toggle.closest("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  unlockSound();
  const want = !available();
  toggle.disabled = true;
  try {
    await api("POST", "/api/me/availability", { available: want });
    setAvailable(want);
  } catch (err) {
    // The API is the record; the socket op sets the same flag if HTTP is failing.
    if (lobby.send({ type: "control", op: "available", value: want })) setAvailable(want);
    else notice(err.message);
  } finally {
    toggle.disabled = false;
  }
});

// -- the lobby: invitations arrive here --------------------------------------------------------

const lobby = new Signal({});
lobby.addEventListener("state", (e) => {
  const { state, reason } = e.detail;
  setState(byTestId(desk, "lobby-state"), state, t(`specialist.lobby.${state}`));
  if (state === "ended" && reason === "signed_out") location.assign("/login");
});
lobby.addEventListener("welcome", (e) => {
  // A fresh lobby is sent every invitation still ringing, so start the list again. An answer
  // in flight belonged to the old place; its reply will not come here.
  if (e.detail.fresh) {
    ringing.clear();
    answering = null;
  }
  render();
});
lobby.addEventListener("invitation", (e) => onInvitation(e.detail));
lobby.addEventListener("error", (e) => {
  if (answering && e.detail.detail === "not_ringing") {
    ringing.delete(answering.id);
    answering = null;
    notice(t("specialist.notice.not_ringing"));
    render();
  } else if (e.detail.message) {
    notice(e.detail.message);
  }
});
lobby.start();

function onInvitation(message) {
  const id = message.invitation;
  const known = ringing.get(id);
  const incident = (known && known.incident_ref) || message.incident_ref || "";
  const ours = answering && answering.id === id;
  if (message.op === "ringing") {
    ringing.set(id, message);
  } else {
    ringing.delete(id);
    if (ours) answering = null;
    if (message.op === "accepted") {
      if (ours) openCall(message.session);
      else notice(t("specialist.notice.accepted_elsewhere", { incident }));
    } else if (message.op === "declined") {
      notice(t(ours ? "specialist.notice.declined" : "specialist.notice.declined_elsewhere", { incident }));
    } else if (message.op === "timed_out") {
      notice(t("specialist.notice.timed_out", { incident }));
    } else if (message.op === "cancelled") {
      notice(t("specialist.notice.cancelled", { incident }));
    }
  }
  render();
}

function oldest() {
  let first = null;
  for (const invitation of ringing.values()) {
    if (!first || invitation.since < first.since) first = invitation;
  }
  return first;
}

function render() {
  const first = oldest();
  if (!first) {
    shownId = null;
    show(alertBox, false);
    tone.stop();
    document.title = baseTitle;
    renderSoundHint();
    return;
  }
  const fresh = shownId !== first.invitation;
  shownId = first.invitation;
  byTestId(alertBox, "invitation-incident").textContent = first.incident_ref || "";
  const more = byTestId(alertBox, "invitation-more");
  more.textContent = t("specialist.alert.more", { count: ringing.size - 1 });
  show(more, ringing.size > 1);
  acceptButton.disabled = declineButton.disabled = Boolean(answering);
  show(alertBox, true);
  tick();
  tone.start();
  document.title = `${t("specialist.title.ringing")} · ${baseTitle}`;
  // Take focus only when the desk is idle; never pull it out of a call the specialist is in.
  if (fresh && !(call && !call.finished)) acceptButton.focus();
  renderSoundHint();
}

function tick() {
  const first = oldest();
  if (!first) return;
  byTestId(alertBox, "invitation-waiting").textContent = duration(Date.now() / 1000 - first.since);
}
setInterval(tick, 500); // twice a second, so the count never lags a whole second

async function answer(accept) {
  const id = shownId;
  if (!id || answering) return;
  answering = { id, accept };
  acceptButton.disabled = declineButton.disabled = true;
  const op = accept ? "accept" : "decline";
  if (lobby.send({ type: "control", op, invitation: id })) return; // the reply is an `invitation`
  // The desk socket is down: answer over HTTP instead.
  try {
    const body = await api("POST", `/api/invitations/${encodeURIComponent(id)}/${op}`);
    ringing.delete(id);
    answering = null;
    if (accept) openCall(body.session);
  } catch (err) {
    answering = null;
    if (err.code === "not_ringing") ringing.delete(id);
    notice(err.message);
  }
  render();
}
acceptButton.addEventListener("click", () => answer(true));
declineButton.addEventListener("click", () => answer(false));

// -- the call, on this page ---------------------------------------------------------------------

async function openCall(sessionId) {
  if (call && !call.finished) call.leave();
  let section = null;
  try {
    // The session page renders the call view for this specialist; take its #call-view.
    const response = await fetch(`/console/sessions/${encodeURIComponent(sessionId)}`, {
      credentials: "same-origin", cache: "no-store",
    });
    if (response.ok) {
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      section = page.getElementById("call-view");
    }
  } catch {
    section = null;
  }
  if (!section) {
    notice(t("specialist.notice.open_failed"));
    return;
  }
  const view = document.adoptNode(section);
  slot.replaceChildren(view);
  call = new CallView(view, { closable: true, onClose: closeCall });
  call.start();
  const heading = view.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

function closeCall() {
  slot.replaceChildren();
  call = null;
  toggle.focus();
}

function notice(text) {
  noticeBox.textContent = text;
  show(noticeBox, true);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => show(noticeBox, false), 15000);
}

const list = byTestId(desk, "session-list");
if (list) new SessionList(list).start();
renderSoundHint();
