// Entry for the console pages (console.html, session.html, supervisor.html): the live session
// list, and the call view when the page has one (handler, accepted specialist or observer).

import { setLanguage, t } from "./i18n.js";
import { CallView } from "./staff-call.js";
import { SessionList } from "./staff-sessions.js";
import { api } from "./staff-api.js";
import { el } from "./staff-dom.js";

// Staff read the console in English; the caller's language only changes what the caller sees.
try {
  await setLanguage(document.documentElement.lang || "en");
} catch {
  // Without the catalogue every string falls back to its key; the page still works.
}

const callRoot = document.getElementById("call-view");
if (callRoot) new CallView(callRoot).start();

// The risk and referrals panel (handler and accepted specialist only): loaded only where it is.
const casePanel = document.querySelector('[data-testid="case-panel"]');
if (casePanel) {
  const { CasePanel } = await import("./staff-case.js");
  new CasePanel(casePanel).start();
}

// Snapshots of the caller's video (handler only): loaded only where the button is.
if (callRoot && callRoot.querySelector('[data-testid="snapshot"]')) {
  const { SnapshotPanel } = await import("./staff-evidence.js");
  new SnapshotPanel(callRoot, callRoot.dataset.session).start();
}

const list = document.querySelector('[data-testid="session-list"]');
if (list) new SessionList(list).start();

// One press, one text: a second press while the first is on its way would text the caller twice.
const createForm = document.getElementById("create-form");
if (createForm) {
  createForm.addEventListener("submit", () => {
    const button = createForm.querySelector('[data-testid="create-session"]');
    // Disable after the browser has taken the form's values, or the submitter is not sent.
    setTimeout(() => {
      button.disabled = true;
      button.textContent = t("handler.create.sending");
    }, 0);
  });
  // Coming back with the Back button shows the page from cache: make the button usable again.
  window.addEventListener("pageshow", () => {
    const button = createForm.querySelector('[data-testid="create-session"]');
    button.disabled = false;
  });
}

// Who could be invited, kept current on the console while the handler prepares.
const available = document.querySelector('[data-testid="available-specialists"]');
if (available) {
  const refresh = async () => {
    try {
      const body = await api("GET", "/api/specialists");
      const items = body.specialists.map((s) => el("li", {}, s.name));
      available.replaceChildren(...(items.length ? items : [el("li", {}, t("handler.specialist.none_available"))]));
    } catch {
      /* keep what the page showed */
    }
  };
  setInterval(refresh, 15000);
}
