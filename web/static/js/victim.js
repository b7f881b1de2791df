// The caller's page: language, consent, join, the call, the end. The server renders the first
// screen in the caller's language, so it is useful before this script or any socket is up;
// this module takes over from there. The credential lives only in memory and sessionStorage.

import { onQuickExit } from "./quickexit.js";
import { setLanguage, t, translate } from "./i18n.js";
import { Signal } from "./signal.js";
import { Mesh, WEBRTC } from "./mesh.js";
import { LocalMedia } from "./victim-media.js";
import { ChatView } from "./victim-chat.js";
import { LocationShare } from "./victim-location.js";
import { PhotoUpload } from "./victim-upload.js";
import { Ladder } from "./victim-ladder.js";
import { StillSender } from "./victim-stills.js";

const STORE = "erv.caller"; // sessionStorage: gone with the tab; never localStorage or cookies
const KINDS = ["camera", "microphone", "location"];
const REDEEM_TIMEOUT_MS = 30000;
const STILLS_EVERY_S = 3; // until the welcome says the server's pace
const body = document.body;
const el = (testid) => document.querySelector(`[data-testid="${testid}"]`);

// -- strings ---------------------------------------------------------------------------------
// The page's own language comes embedded in the page (nothing to fetch before the call can
// start); after a switch, the fetched catalogue (i18n.js) takes over.

let embedded = {};
try {
  embedded = JSON.parse(document.getElementById("strings").dataset.json || "{}");
} catch {
  embedded = {};
}
let lang = body.dataset.lang || "en";
let fromCatalogue = false;

function tr(key) {
  return fromCatalogue ? t(key) : embedded[key] ?? key;
}

/** Show `key` in `element`, and keep it there across language switches. */
function say(element, key) {
  element.dataset.i18n = key;
  element.textContent = tr(key);
}

async function switchLanguage(next) {
  if (next === lang) return;
  try {
    await setLanguage(next);
  } catch {
    return; // no catalogue (a weak network): stay readable in the current language
  }
  lang = next;
  fromCatalogue = true;
  translate(document);
  for (const link of document.querySelectorAll("[data-set-lang]")) {
    if (link.dataset.setLang === next) link.setAttribute("aria-current", "true");
    else link.removeAttribute("aria-current");
  }
  const field = document.querySelector("input[name=lang]");
  if (field) field.value = next;
  remember({ lang: next });
  if (call.signal) settleAddress();
}

// -- sessionStorage --------------------------------------------------------------------------

function held() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE) || "{}") || {};
  } catch {
    return {};
  }
}

function remember(patch) {
  try {
    sessionStorage.setItem(STORE, JSON.stringify({ ...held(), ...patch }));
  } catch {
    // Private mode or storage off: the call still works, it just cannot survive a reload.
  }
}

function forget() {
  try {
    sessionStorage.removeItem(STORE);
  } catch {
    // nothing stored then
  }
}

// -- screens ---------------------------------------------------------------------------------

function show(id) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== id;
  const heading = document.querySelector(`#${id} [tabindex="-1"]`);
  if (heading) heading.focus();
}

// -- the call --------------------------------------------------------------------------------

const call = {
  signal: null,
  mesh: null,
  media: null,
  chat: null,
  location: null,
  joined: false, // welcomed on the current socket (hello refusals before that end the call)
  ended: false,
  soundOn: false, // incoming sound stays off until the caller turns it on: discretion first
  audio: new Map(), // pid -> <audio>
  wakeLock: null,
  // Still on the 999 phone call (the default): the page sends video and location, asks for
  // no microphone and plays no sound, so nothing echoes or fights the phone for the audio.
  phoneLine: body.dataset.phoneLine !== "0",
  ladder: null,
};

// Quick exit, from any state: stop the camera and microphone, leave the call for good.
onQuickExit(() => {
  if (call.ladder) call.ladder.stop();
  if (call.location) call.location.stop();
  if (call.media) call.media.stop();
  if (call.signal) call.signal.close();
});

function setState(state) {
  document.getElementById("callhead").hidden = false;
  const node = el("connection-state");
  node.dataset.state = state;
  say(node, `victim.state.${state}`);
  body.dataset.call = state;
}

function note(key) {
  const node = el("call-note");
  say(node, key);
  node.hidden = false;
}

function clearNote(key) {
  const node = el("call-note");
  if (node.dataset.i18n === key) node.hidden = true;
}

/** Redeem the link: POST with JSON, no cookies, nothing cached. */
async function redeem(token) {
  const response = await fetch(`/j/${encodeURIComponent(token)}`, {
    method: "POST",
    headers: { Accept: "application/json" },
    credentials: "omit",
    cache: "no-store",
    referrerPolicy: "no-referrer",
    // A weak network must not leave the button spinning for ever; the caller can tap again.
    signal: AbortSignal.timeout ? AbortSignal.timeout(REDEEM_TIMEOUT_MS) : undefined,
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch {
    answer = {};
  }
  if (response.ok && answer.credential) return answer;
  if (answer.error) return { error: answer.error };
  throw new Error(`redeem: ${response.status}`);
}

/** In the call, the address is /j/ (no token): a reload comes back to the call, not to
 *  "already used", and the browser's history keeps no link. */
function settleAddress() {
  history.replaceState(null, "", `/j/?lang=${lang}`);
}

function enterCall(credential, consent, media = new LocalMedia(), mediaReady = null, early = null) {
  remember({ credential: credential.credential, session: credential.session, expires_at: credential.expires_at, consent });
  delete body.dataset.token; // used up: nothing to keep
  settleAddress();
  show("call");
  setState("connecting");

  // A socket opened while the link was being redeemed, or a new one.
  const signal = early || new Signal({ credential: credential.credential, session: credential.session });
  // After a reload: the place this tab had, so rejoining is not taken for another device.
  if (credential.place && !signal.place) signal.place = credential.place;
  const mesh = new Mesh(signal, null);
  call.signal = signal;
  call.mesh = mesh;
  call.media = media;
  call.chat = new ChatView(el("chat-log"), (frame) => signal.sendReliably(frame), tr);
  call.upload = call.upload || new PhotoUpload(el("upload-photo"), el("upload-status"), () => credential.credential, say);
  const stills = new StillSender(() => (call.media ? call.media.video : null), () => credential.credential, STILLS_EVERY_S * 1000);
  call.ladder = new Ladder({ signal, mesh, media: () => call.media, stills });
  call.ladder.addEventListener("rung", (e) => rungChanged(e.detail));

  signal.addEventListener("state", (e) => {
    setState(e.detail.state);
    if (e.detail.state === "ended") finish(e.detail.reason);
  });
  signal.addEventListener("welcome", (e) => {
    remember({ place: { pid: e.detail.pid, secret: e.detail.resume_secret } });
    // What the caller agreed to share goes on the case record (once per fresh join).
    if (e.detail.fresh) signal.send({ type: "control", op: "consent", camera: Boolean(consent.camera), microphone: Boolean(consent.microphone), location: Boolean(consent.location) });
    call.joined = true;
    if (e.detail.call) {
      if (e.detail.call.stills_every) stills.everyMs = e.detail.call.stills_every * 1000;
      setPhoneLine(e.detail.call.phone_line !== false);
    }
    reportCapture(true);
    if (call.location) call.location.flush();
  });
  signal.addEventListener("call_mode", (e) => setPhoneLine(e.detail.phone_line !== false));
  signal.addEventListener("chat", (e) => call.chat.add(e.detail, signal.pid));
  signal.addEventListener("error", (e) => {
    const { code } = e.detail;
    if (code === "resume_failed") call.joined = false; // signal.js joins afresh
    if (call.joined) return;
    if (code === "session_ended") finish("session_ended");
    else if (code === "unauthorized") finish("invalid");
  });
  mesh.addEventListener("track", (e) => {
    if (e.detail.track.kind === "audio") playAudio(e.detail.pid, e.detail.stream);
  });
  mesh.addEventListener("peer-gone", (e) => dropAudio(e.detail.pid));
  // The path to the control room went silent: the phone has most likely changed network (or
  // lost it), and the socket is as dead as the media path, only not yet known to be. Get a
  // new one now rather than after the heartbeat; resuming costs nothing if the old was fine.
  mesh.addEventListener("silent", (e) => {
    if (e.detail.role === "handler") signal.drop("path_silent");
  });
  media.addEventListener("change", () => {
    if (!call.ended) mediaChanged();
  });
  if (!early) signal.start();

  if (consent.location) startLocation();
  updateControls();
  (mediaReady || media.start({ audio: consent.microphone && !call.phoneLine, video: consent.camera })).then(({ blocked }) => {
    if (call.ended) return;
    if (blocked) note("victim.note.media_blocked");
    mediaChanged();
    call.ladder.start();
  });
  if (!WEBRTC) note("victim.note.no_webrtc");
  keepAwake();
}

/** Phone line (video and location only) or full sound, as the handler set it. */
function setPhoneLine(phoneLine) {
  const was = call.phoneLine;
  call.phoneLine = phoneLine;
  body.dataset.phoneLine = phoneLine ? "1" : "0";
  const prompt = el("talk-prompt");
  if (phoneLine) {
    prompt.hidden = true;
    if (call.media && (call.media.audio || call.media.states.microphone !== "not_asked")) call.media.releaseMic();
    call.soundOn = false;
    for (const audio of call.audio.values()) audio.muted = true;
  } else if (was) {
    // The handler would like to talk on the page: the caller chooses, with a tap (which also
    // lets the phone play sound).
    prompt.hidden = false;
  }
  updateControls();
  reportCapture();
}

/** The caller took up the handler's offer to talk on the page. */
async function talkOnPage() {
  el("talk-prompt").hidden = true;
  call.soundOn = true;
  for (const audio of call.audio.values()) {
    audio.muted = false;
    audio.play().catch(() => {});
  }
  if (call.media) {
    try {
      await call.media.setMic(true);
    } catch {
      note("victim.note.media_blocked");
    }
  }
  mediaChanged();
}

/** What works on this phone, for the handler: camera, microphone, location. */
let lastCapture = "";
function reportCapture(force = false) {
  if (!call.signal || !call.joined) return;
  const media = call.media;
  const states = {
    camera: media ? media.states.camera : "off",
    microphone: call.phoneLine && !(media && media.audio) ? "not_asked" : (media ? media.states.microphone : "off"),
    location: call.location ? call.location.state : "off",
  };
  const text = JSON.stringify(states);
  if (!force && text === lastCapture) return;
  if (call.signal.send({ type: "control", op: "capture", ...states })) lastCapture = text;
}

/** Tell the caller, calmly, what the ladder's rung means for them. */
function rungChanged({ rung, reason }) {
  for (const key of ["victim.note.stills", "victim.note.no_webrtc", "victim.note.reduced"]) clearNote(key);
  if (rung === "stills") note(reason === "no_webrtc" ? "victim.note.no_webrtc" : "victim.note.stills");
  else if (rung === "reduced") note("victim.note.reduced");
}

/** The call is over (ended by staff, replaced, refused, or left): calm words, nothing running. */
function finish(reason) {
  if (call.ended) return;
  call.ended = true;
  setState("ended");
  if (call.ladder) call.ladder.stop();
  if (call.location) call.location.stop();
  if (call.media) call.media.stop();
  for (const pid of [...call.audio.keys()]) dropAudio(pid);
  el("local-video").srcObject = null;
  el("local-video").hidden = true;
  if (call.wakeLock) call.wakeLock.release().catch(() => {});
  setDark(false);
  forget();
  const words = { replaced: "victim.ended.replaced", invalid: "victim.link.invalid", refused: "victim.link.invalid", credential_ended: "victim.link.invalid" };
  say(el("ended-reason"), words[reason] || "victim.ended.body");
  show("ended");
  if (call.signal && call.signal.state !== "ended") call.signal.close(false);
}

// -- media -----------------------------------------------------------------------------------

function mediaChanged() {
  const media = call.media;
  const video = el("local-video");
  if (media.cameraOn) {
    video.muted = true;
    if (video.srcObject !== media.stream) video.srcObject = media.stream;
    video.classList.toggle("mirrored", media.facing === "user");
    video.hidden = false;
    video.play().catch(() => {});
  } else {
    video.hidden = true;
  }
  call.mesh.setLocal(media.stream).catch(() => {});
  updateControls();
  rememberChoices();
  reportCapture();
}

/** A reload keeps what the caller chose since joining: a camera turned off stays off. */
function rememberChoices() {
  const media = call.media;
  const location = Boolean(call.location && call.location.active);
  remember({ consent: { camera: Boolean(media && media.cameraOn), microphone: Boolean(media && media.micOn), location } });
}

function playAudio(pid, stream) {
  let audio = call.audio.get(pid);
  if (!audio) {
    audio = document.createElement("audio");
    audio.autoplay = true;
    audio.dataset.testid = "remote-audio";
    document.getElementById("call").append(audio);
    call.audio.set(pid, audio);
  }
  audio.muted = !call.soundOn || call.phoneLine;
  if (audio.srcObject !== stream) audio.srcObject = stream;
  audio.play().catch(() => {});
}

function dropAudio(pid) {
  const audio = call.audio.get(pid);
  if (!audio) return;
  audio.srcObject = null;
  audio.remove();
  call.audio.delete(pid);
}

function startLocation() {
  if (!call.location) {
    call.location = new LocationShare(
      (frame) => call.joined && call.signal.send(frame),
      () => {
        note("victim.note.location_blocked");
        updateControls();
        rememberChoices();
      },
      () => reportCapture(),
    );
  }
  call.location.start();
}

async function keepAwake() {
  // A phone that sleeps mid-call may stop the camera; keep the screen on while the call lasts.
  if (call.ended || !("wakeLock" in navigator) || document.visibilityState !== "visible") return;
  try {
    call.wakeLock = await navigator.wakeLock.request("screen");
  } catch {
    call.wakeLock = null;
  }
}

// -- controls --------------------------------------------------------------------------------

function toggle(testid, on, onKey, offKey) {
  const button = el(testid);
  button.dataset.state = on ? "on" : "off";
  say(button, on ? offKey : onKey);
}

function updateControls() {
  const media = call.media;
  toggle("sound-toggle", call.soundOn, "victim.controls.sound_on", "victim.controls.sound_off");
  toggle("mic-off", media && media.micOn, "victim.controls.mic_on", "victim.controls.mic_off");
  toggle("camera-off", media && media.cameraOn, "victim.controls.camera_on", "victim.controls.camera_off");
  toggle("location-toggle", call.location && call.location.active, "victim.controls.location_on", "victim.controls.location_off");
  el("camera-switch").disabled = !(media && media.cameraOn);
  // On the phone line the sound is the phone call's: no page sound, no page microphone.
  el("sound-toggle").hidden = call.phoneLine;
  el("mic-off").hidden = call.phoneLine;
}

/** Run a media change with its button held down, so a second tap cannot race the first. */
async function busy(testid, action) {
  const button = el(testid);
  if (button.getAttribute("aria-busy") === "true" || !call.media || call.ended) return;
  button.setAttribute("aria-busy", "true");
  try {
    await action(call.media);
  } catch {
    note("victim.note.media_blocked");
  } finally {
    button.removeAttribute("aria-busy");
    if (!call.ended) mediaChanged();
  }
}

function setDark(dark) {
  const overlay = el("dark-overlay");
  overlay.hidden = !dark;
  document.documentElement.classList.toggle("dark", dark);
  if (dark) overlay.focus();
}

function wireControls() {
  el("talk-on-page").addEventListener("click", () => talkOnPage());
  el("talk-not-now").addEventListener("click", () => {
    el("talk-prompt").hidden = true;
  });
  el("sound-toggle").addEventListener("click", () => {
    if (call.phoneLine) return;
    call.soundOn = !call.soundOn;
    for (const audio of call.audio.values()) {
      audio.muted = !call.soundOn;
      if (call.soundOn) audio.play().catch(() => {}); // this tap lets the phone play sound
    }
    updateControls();
  });
  el("mic-off").addEventListener("click", () => busy("mic-off", (media) => media.setMic(!media.micOn)));
  el("camera-off").addEventListener("click", () => busy("camera-off", (media) => media.setCamera(!media.cameraOn)));
  el("camera-switch").addEventListener("click", () => busy("camera-switch", (media) => media.switchCamera()));
  el("location-toggle").addEventListener("click", () => {
    if (!call.signal || call.ended) return;
    if (call.location && call.location.active) call.location.stop();
    else startLocation();
    updateControls();
    rememberChoices();
    reportCapture();
  });
  el("screen-dark").addEventListener("click", () => setDark(true));
  el("dark-overlay").addEventListener("click", () => {
    setDark(false);
    el("screen-dark").focus();
  });

  el("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = el("chat-input");
    if (call.chat && call.chat.sendText(input.value)) input.value = "";
  });
  for (const button of document.querySelectorAll("[data-canned]")) {
    button.addEventListener("click", () => call.chat && call.chat.sendCanned(button.dataset.canned));
  }
  document.addEventListener("visibilitychange", () => {
    if (call.signal && document.visibilityState === "visible") keepAwake();
  });
}

// -- the three ways in -----------------------------------------------------------------------

/** The link's page: consent, then one tap redeems the link and joins. */
function wireJoinForm() {
  const form = el("join-form");
  const button = el("join");
  const error = el("join-error");
  let joining = false;
  if (!WEBRTC) {
    // An in-app browser or an old phone: say so before the link is used up, while it can
    // still be opened in the phone's own browser; joining here still sends pictures.
    el("no-webrtc").hidden = false;
    const copy = el("copy-link");
    copy.addEventListener("click", async () => {
      let ok = false;
      try {
        await navigator.clipboard.writeText(location.href);
        ok = true;
      } catch {
        const field = el("link-text");
        field.hidden = false;
        field.value = location.href;
        field.select();
      }
      say(el("copy-status"), ok ? "victim.nowebrtc.copied" : "victim.nowebrtc.copy_manual");
      el("copy-status").hidden = false;
    });
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (joining) return;
    joining = true;
    const consent = Object.fromEntries(KINDS.map((kind) => [kind, el(`consent-${kind}`).checked]));
    if (call.phoneLine) consent.microphone = false; // the phone call has the microphone
    error.hidden = true;
    button.disabled = true;
    say(button, "victim.joining");
    // Ask for the camera (and microphone) within the tap, while the link is redeemed.
    const media = new LocalMedia();
    call.media = media;
    const mediaReady = media.start({ audio: consent.microphone, video: consent.camera });
    // ...and open the call's socket meanwhile: its handshakes cost several round trips, which
    // on a weak cell link are a second or more; the hello goes once the credential is in.
    const redeemed = redeem(body.dataset.token).catch(() => ({ error: "failed" }));
    const early = new Signal(redeemed.then((a) => (a.credential ? { credential: a.credential, session: a.session } : null)));
    early.start();
    const answer = await redeemed;
    if (answer.credential) {
      enterCall(answer, consent, media, mediaReady, early);
      return;
    }
    early.close(false);
    media.stop();
    call.media = null;
    joining = false;
    button.disabled = false;
    say(button, "victim.join");
    say(error, `victim.link.${answer.error in { unknown: 1, expired: 1, revoked: 1, used: 1, ended: 1 } ? answer.error : "failed"}`);
    error.hidden = false;
    if (answer.error !== "failed") form.querySelector("fieldset").hidden = button.hidden = true; // final
  });
}

/** The no-script form's answer: the credential came in the page. */
function joinFromPage() {
  const credential = { credential: body.dataset.credential, session: body.dataset.session, expires_at: Number(body.dataset.expires) };
  const kinds = (body.dataset.consent || "").split(" ");
  const consent = Object.fromEntries(KINDS.map((kind) => [kind, kinds.includes(kind)]));
  for (const name of ["credential", "session", "expires", "consent"]) delete body.dataset[name];
  enterCall(credential, consent); // its new address also stops a reload posting the form again
}

/** A tab that holds a live credential is this caller's own call after a reload (or a phone
 *  that discarded the tab): rejoin it. */
function rejoinIfHeld() {
  const saved = held();
  const live = saved.credential && (!saved.expires_at || saved.expires_at * 1000 > Date.now());
  if (!live) {
    forget();
    return false;
  }
  enterCall(saved, saved.consent || {});
  return true;
}

for (const link of document.querySelectorAll("[data-set-lang]")) {
  link.addEventListener("click", (e) => {
    e.preventDefault();
    switchLanguage(link.dataset.setLang);
  });
}
wireControls();
const saved = held();
if (saved.lang && saved.lang !== lang) switchLanguage(saved.lang);
const page = body.dataset.page;
if (page === "join") {
  wireJoinForm();
} else if (page === "joined") {
  joinFromPage();
} else if (page === "resume") {
  if (!rejoinIfHeld()) {
    setState("ended"); // nothing left to rejoin: the call ended or the caller left
    show("ended");
  }
} else if (page === "message" && body.dataset.problem === "used") {
  rejoinIfHeld();
}
