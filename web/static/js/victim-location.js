// The caller's position, shared only with consent: every fix from watchPosition, but at most
// one every 5 s unless the caller moved more than 20 m (a moving caller matters at once).

const MIN_INTERVAL_MS = 5000;
const MOVED_METRES = 20;
const MAX_ACCURACY = 1e6; // the protocol's limit

export class LocationShare {
  /**
   * @param {(message: object) => boolean} send sends a frame; false if the socket is down
   * @param {(problem: "blocked") => void} onProblem the phone refused to share
   * @param {() => void} onState `state` changed (ok, off, denied, unavailable)
   */
  constructor(send, onProblem, onState = () => {}) {
    this.send = send;
    this.onProblem = onProblem;
    this.onState = onState;
    this.state = "off";
    this.watch = null;
    this.latest = null; // newest fix {lat, lon, accuracy}
    this.sent = null; // last fix that went out
    this.sentAt = 0;
    this.timer = null;
  }

  get active() {
    return this.watch !== null;
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState();
  }

  start() {
    if (this.active) return;
    if (!("geolocation" in navigator)) {
      this.setState("unavailable");
      this.onProblem("blocked");
      return;
    }
    this.watch = navigator.geolocation.watchPosition(
      (position) => this.onPosition(position),
      (error) => {
        // Timeouts and lost fixes come and go; a refusal is final until the caller asks again.
        if (error.code === error.PERMISSION_DENIED) {
          this.stop("denied");
          this.onProblem("blocked");
        } else if (error.code === error.POSITION_UNAVAILABLE) {
          this.setState("unavailable");
        }
      },
      { enableHighAccuracy: true, maximumAge: 0, timeout: 30000 },
    );
  }

  onPosition({ coords }) {
    const fix = { lat: coords.latitude, lon: coords.longitude, accuracy: Math.min(coords.accuracy, MAX_ACCURACY) };
    if (![fix.lat, fix.lon, fix.accuracy].every(Number.isFinite)) return;
    this.latest = fix;
    this.setState("ok");
    const moved = this.sent ? metres(this.sent, fix) > MOVED_METRES : true;
    const wait = this.sentAt + MIN_INTERVAL_MS - Date.now();
    if (moved || wait <= 0) {
      this.flush();
    } else if (!this.timer) {
      // Still send the newest fix once the 5 s are up, even if the phone reports no more.
      this.timer = setTimeout(() => this.flush(), wait);
    }
  }

  /** Send the newest fix now (also called when the socket comes back). */
  flush() {
    clearTimeout(this.timer);
    this.timer = null;
    const fix = this.latest;
    if (!fix || !this.active) return;
    if (this.send({ type: "location", ...fix, ts: Date.now() })) {
      this.sent = fix;
      this.sentAt = Date.now();
    }
  }

  stop(state = "off") {
    if (this.watch !== null) navigator.geolocation.clearWatch(this.watch);
    this.watch = null;
    clearTimeout(this.timer);
    this.timer = null;
    this.setState(state);
  }
}

/** Distance in metres between two fixes (haversine). */
function metres(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371000 * Math.asin(Math.sqrt(h));
}
