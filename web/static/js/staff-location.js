// The caller's location panel: position, accuracy, how old the fix is (ticking every second)
// and a link to the configured map. Locations are never logged anywhere.

import { t } from "./i18n.js";
import { byTestId, setState, show } from "./staff-dom.js";

export class LocationPanel {
  constructor(panel, mapTemplate) {
    this.panel = panel;
    this.mapTemplate = mapTemplate || "";
    this.fix = null; // {lat, lon, accuracy, takenAt (ms, local clock)}
  }

  update(message) {
    if (!this.panel) return;
    const receivedAt = Date.now();
    // ts is the phone's own clock (ms). Trust it unless it is implausible for a clock that
    // is roughly right; then the time we received it is the better guess.
    let takenAt = Number(message.ts);
    if (!Number.isFinite(takenAt) || takenAt > receivedAt + 5000 || takenAt < receivedAt - 3600000) {
      takenAt = receivedAt;
    }
    this.fix = { lat: message.lat, lon: message.lon, accuracy: message.accuracy, takenAt };
    const p = this.panel;
    setState(p, "known");
    show(byTestId(p, "location-none"), false);
    show(byTestId(p, "location-facts"), true);
    setNumber(byTestId(p, "location-lat"), message.lat, message.lat.toFixed(5));
    setNumber(byTestId(p, "location-lon"), message.lon, message.lon.toFixed(5));
    setNumber(byTestId(p, "location-accuracy"), message.accuracy,
      t("staff.location.accuracy", { metres: Math.round(message.accuracy) }));
    const link = byTestId(p, "map-link");
    const href = mapUrl(this.mapTemplate, message.lat, message.lon);
    if (link && href) {
      link.href = href;
      show(link, true);
    }
    this.tick();
  }

  tick() {
    if (!this.panel || !this.fix) return;
    const seconds = Math.max(0, Math.round((Date.now() - this.fix.takenAt) / 1000));
    const age = byTestId(this.panel, "location-age");
    setNumber(age, seconds, t("staff.location.age", { seconds }));
    // An old fix is flagged: the caller may have moved since.
    if (age) age.classList.toggle("stale", seconds > 120);
  }
}

function setNumber(node, value, text) {
  if (!node) return;
  node.dataset.value = String(value);
  node.textContent = text;
}

/** The configured map address with {lat}/{lon} filled in; only http(s) addresses are used. */
export function mapUrl(template, lat, lon) {
  if (!/^https?:\/\//.test(template)) return "";
  return template.replaceAll("{lat}", lat.toFixed(6)).replaceAll("{lon}", lon.toFixed(6));
}
