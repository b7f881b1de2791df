// The session lists (console, desk, supervisor): state badges kept live by asking the API every
// few seconds, new sessions added at the top, "n min ago" kept current. Polling is enough here:
// a list changes slowly and the call view has its own socket for what changes fast.

import { api } from "./staff-api.js";
import { t } from "./i18n.js";
import { el } from "./staff-dom.js";

const REFRESH_MS = 10000;

export class SessionList {
  constructor(table) {
    this.table = table;
    this.body = table.querySelector("tbody");
    this.timer = null;
  }

  start() {
    this.renderAges();
    this.refresh(); // the caller's state is only known live
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
  }

  async refresh() {
    if (document.hidden) return;
    let body;
    try {
      body = await api("GET", "/api/sessions");
    } catch {
      return;
    }
    const rows = new Map([...this.body.querySelectorAll("tr[data-session]")].map((r) => [r.dataset.session, r]));
    const fresh = [];
    for (const session of body.sessions) {
      const row = rows.get(session.id);
      if (row) {
        updateBadge(row, session.state);
        updateCaller(row, session.caller);
      } else {
        fresh.push(newRow(session));
      }
    }
    if (fresh.length) {
      const empty = this.body.querySelector("tr.empty");
      if (empty) empty.remove();
      this.body.prepend(...fresh);
    }
    this.renderAges();
  }

  renderAges() {
    const now = Date.now() / 1000;
    for (const time of this.table.querySelectorAll("time[data-ts]")) {
      const minutes = Math.max(0, Math.floor((now - Number(time.dataset.ts)) / 60));
      time.textContent = t("staff.list.minutes_ago", { minutes });
    }
  }
}

function updateBadge(row, state) {
  const badge = row.querySelector('[data-testid="session-state"]');
  if (!badge || badge.dataset.state === state) return;
  badge.dataset.state = state;
  badge.textContent = t(`staff.session.${state}`);
  badge.classList.toggle("live", state !== "ended");
}

/** What the control room should know of the caller now: video flowing, frozen, left... */
function updateCaller(row, caller) {
  const badge = row.querySelector('[data-testid="caller-state"]');
  if (!badge || !caller) return;
  const text = t(`staff.caller.${caller.state}`, { seconds: Math.round(caller.seconds || 0) });
  badge.dataset.state = caller.state;
  if (caller.rung) badge.dataset.rung = caller.rung;
  if (badge.textContent !== text) badge.textContent = text;
}

function newRow(session) {
  const created = session.timeline.created || Date.now() / 1000;
  const row = el("tr", { "data-testid": "session-row", dataset: { session: session.id } },
    el("td", {}, el("a", { href: `/console/sessions/${encodeURIComponent(session.id)}` }, session.incident_ref)),
    el("td", {}, session.phone),
    el("td", {}, el("span", {
      class: `badge${session.state !== "ended" ? " live" : ""}`, "data-testid": "session-state",
      dataset: { state: session.state },
    }, t(`staff.session.${session.state}`))),
    el("td", {}, el("span", { class: "badge", "data-testid": "caller-state", role: "status", dataset: { state: "unknown" } }, "–")),
    el("td", {}, el("time", { dataset: { ts: String(created) } }, "")),
  );
  updateCaller(row, session.caller);
  return row;
}
