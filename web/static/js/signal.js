// The signalling socket: hello/welcome, per-participant seq, resume after a drop, heartbeats.
// docs/protocol.md is the contract. One instance per tab; it knows nothing of media or pages.
//
// A place in the call ends only when the server says so: a `bye` (other than
// server_shutdown), close 4000 (resumed elsewhere), or our own close(). Every other close is
// the network's doing, a proxy's, or our own heartbeat giving up on a dead socket: whatever
// its code (1000 and 1008 included), we reconnect and resume. A caller told "the call has
// ended" while it is alive is the failure this service exists to prevent.

const PROTOCOL_VERSION = 1;
// Until the server's welcome says its heartbeat: ping every 15 s, give up after 10 s.
const DEFAULT_PING_MS = 15000;
const DEFAULT_PONG_MS = 10000;
// A socket that has not opened and been welcomed within this long is given up and retried:
// on a weak link a connect attempt made during an outage can hang long after it is over.
const CONNECT_TIMEOUT_MS = 10000;
const BACKOFF_MAX_MS = 5000;
const BACKOFF_POLICY_MS = 10000; // after 1008: something was wrong; do not hammer the server
const QUEUE_LIMIT = 256;

export class Signal extends EventTarget {
  /**
   * @param {object|Promise<object|null>} join what to say in a fresh hello: {credential} for
   *   the caller, {session} for staff in a session, {} for the staff lobby; or a promise of it
   *   (the socket opens at once and says hello when it resolves; null: never).
   */
  constructor(join, url = defaultUrl()) {
    super();
    this.join = join;
    this.url = url;
    this.pid = null;
    this.role = null;
    this.secret = null;
    // The caller's last place ({pid, secret}), kept across a failed resume and (by the
    // caller's page, in sessionStorage) across a reload: a fresh hello that shows it is this
    // page coming back, not a different device, so it needs no handler to let it in.
    this.place = null;
    this.lastSeq = 0;
    this.resumeWindow = 60;
    this.iceServers = [];
    this.state = "idle";
    this.ws = null;
    this.ended = false;
    this.lostAt = 0;
    this.attempt = 0;
    this.pingEveryMs = DEFAULT_PING_MS;
    this.pongTimeoutMs = DEFAULT_PONG_MS;
    this.pingTimer = null;
    this.pongTimer = null;
    this.connectTimer = null;
    this.retryTimer = null;
    this.restarting = false;
    this.queue = []; // signals that waited for the socket to come back
    this.pending = new Map(); // cid -> {message, ws}: chat/advice not yet echoed, and the socket it went on
    this.seenSays = new Set(); // "from:cid" of chat/advice shown: a message sent twice shows once
    this.settling = false; // a ping sent after a welcome, whose pong means "replay is done"
    this.reconnects = 0; // how often this tab lost and regained its socket (for tests, stats)
  }

  /**
   * Send a chat or advice so that it cannot be lost with a socket that died under it: it
   * carries a `cid`, stays pending until the server's echo (with that cid) comes back, and
   * after a resume (once the replayed frames are in) whatever is still pending goes again.
   * Returns its cid and whether it went now (if not, it goes when the socket is back).
   */
  sendReliably(message) {
    const cid = message.cid || randomId();
    const framed = { ...message, cid };
    if (this.ended) return { cid, sent: false };
    const sent = this.send(framed);
    this.pending.set(cid, { message: framed, ws: sent ? this.ws : null });
    return { cid, sent };
  }

  start() {
    this.open();
    // A phone coming back online, or a tab coming back to the front, should not wait out a
    // back-off or a ping interval to find out whether the socket still works.
    window.addEventListener("online", () => this.nudge());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.nudge();
    });
  }

  /**
   * Send a frame on the joined socket. With `queue`, a frame that cannot go now waits and
   * goes, in order, once the socket has resumed (signals for a peer connection: an ICE
   * restart's offer must not be lost to a reconnect).
   */
  send(message, { queue = false } = {}) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === "connected") {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    if (queue && !this.ended) {
      this.queue.push(message);
      if (this.queue.length > QUEUE_LIMIT) this.queue.shift();
    }
    return false;
  }

  /** Leave for good (quick exit, hang up): no resume. If the socket cannot say so right now
   *  (it is reconnecting), the place is given up over HTTP, with a request that outlives the
   *  page (the quick exit navigates away at once), so nobody waits out the resume window. */
  close(leave = true) {
    if (leave && !this.send({ type: "control", op: "leave" }) && this.pid && this.secret) {
      try {
        fetch(this.url.replace(/^ws/, "http").replace(/\/ws$/, "/ws/leave"), {
          method: "POST", keepalive: true, credentials: "omit", cache: "no-store",
          referrerPolicy: "no-referrer", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ pid: this.pid, secret: this.secret }),
        }).catch(() => {});
      } catch {
        // leaving matters more than saying so
      }
    }
    this.ended = true;
    this.queue = [];
    this.pending.clear();
    this.stopTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "bye");
    this.setState("ended");
  }

  /** Give up on the current socket (it looks dead) and reconnect at once; the old one is
   *  closed with 4001 but its close is not waited for: on a dead link that can take minutes. */
  drop(reason = "dropped") {
    const ws = this.ws;
    if (!ws || this.ended) return;
    this.ws = null;
    try {
      ws.close(4001, reason);
    } catch {
      // already closing
    }
    this.lost(0);
  }

  /** Check the connection now: reconnect at once if we are waiting to, ping if connected. */
  nudge() {
    if (this.ended) return;
    if (this.state === "reconnecting" && this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.open();
    } else if (this.state === "connected") {
      this.ping();
    }
  }

  setState(state, detail = {}) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  open() {
    if (this.ended) return;
    this.retryTimer = null;
    this.setState(this.pid ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    clearTimeout(this.connectTimer);
    // Opened and welcomed in time, or given up and tried again.
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && this.state !== "connected") this.drop("connect_timeout");
    }, CONNECT_TIMEOUT_MS);
    ws.addEventListener("open", async () => {
      if (ws !== this.ws) return;
      const hello = { type: "hello", v: PROTOCOL_VERSION };
      if (this.pid && this.secret) {
        hello.resume = { pid: this.pid, secret: this.secret, last_seq: this.lastSeq };
      } else {
        // The caller's page opens its socket while its link is still being redeemed (on a
        // weak link the handshakes take longer than the redeem): the hello waits for it.
        const join = await this.join;
        if (ws !== this.ws || !join || ws.readyState !== WebSocket.OPEN) return;
        this.join = join;
        Object.assign(hello, this.freshHello());
      }
      ws.send(JSON.stringify(hello));
    });
    ws.addEventListener("message", (event) => {
      if (ws === this.ws) this.onFrame(ws, event.data);
    });
    ws.addEventListener("close", (event) => this.onClose(ws, event));
  }

  onFrame(ws, data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    // Anything from the server shows the socket is alive.
    clearTimeout(this.pongTimer);
    this.pongTimer = null;
    if (message.type === "pong") {
      if (this.settling) this.settle();
      return;
    }
    const says = (message.type === "chat" || message.type === "advice") && message.cid;
    if (says) this.pending.delete(message.cid); // ours arrived (cids are random: no one else's match)
    if (typeof message.seq === "number") {
      if (message.seq <= this.lastSeq) return; // already seen (a replay overlap)
      this.lastSeq = message.seq;
    }
    if (says && !this.firstSight(`${message.from}:${message.cid}`)) return;
    if (message.type === "welcome") {
      this.onWelcome(message);
      return;
    }
    if (message.type === "error" && message.code === "resume_failed") {
      // The old place is gone: join afresh on the same socket.
      this.pid = null;
      this.secret = null;
      this.lastSeq = 0;
      ws.send(JSON.stringify({ type: "hello", v: PROTOCOL_VERSION, ...this.freshHello() }));
      return;
    }
    if (message.type === "waiting") {
      // A caller is already in the call: the handler decides whether this device joins. Keep
      // the socket (the server pings it) until a welcome or a bye.
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
      this.setState("waiting", { reason: message.reason });
    }
    if (message.type === "bye" && message.reason === "server_shutdown") {
      // This server is going away. With several nodes another one has our place: reconnect
      // and resume. A single server restarting has lost it: the resume fails and we rejoin.
      this.restarting = true;
      return;
    }
    if (message.type === "bye") {
      // The server removed us (the call ended, we left, another tab took our place): final.
      this.ended = true;
      this.queue = [];
      this.pending.clear();
      this.stopTimers();
      this.setState("ended", { reason: message.reason });
    }
    this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  /** What a fresh hello says: the join, and for the caller the place it had, if any. */
  freshHello() {
    const join = this.join || {};
    return join.credential && this.place ? { ...join, replaces: this.place } : { ...join };
  }

  onWelcome(message) {
    const fresh = message.pid !== this.pid;
    this.pid = message.pid;
    this.role = message.role;
    this.secret = message.resume_secret;
    this.place = { pid: message.pid, secret: message.resume_secret };
    this.resumeWindow = message.resume_window || this.resumeWindow;
    this.iceServers = message.ice_servers || [];
    if (typeof message.heartbeat === "number" && message.heartbeat > 0) {
      // Ping a little more often than the server would, and give up after half a ping.
      this.pingEveryMs = Math.min(DEFAULT_PING_MS, message.heartbeat * 1000);
      this.pongTimeoutMs = Math.max(1500, Math.min(DEFAULT_PONG_MS, this.pingEveryMs / 2));
    }
    if (fresh) this.lastSeq = 0;
    const wasLost = this.lostAt > 0;
    this.attempt = 0;
    this.lostAt = 0;
    clearTimeout(this.connectTimer);
    this.connectTimer = null;
    if (wasLost) this.reconnects += 1;
    this.setState("connected");
    this.startHeartbeat();
    // A new place means new peer connections: signals for the old ones are void.
    const waiting = fresh ? [] : this.queue;
    this.queue = [];
    this.dispatchEvent(new CustomEvent("welcome", { detail: { ...message, fresh } }));
    for (const queued of waiting) this.send(queued, { queue: true });
    // The frames we missed follow the welcome; a ping's pong comes after all of them.
    this.settling = true;
    this.ping();
  }

  /**
   * Whether a chat or advice is new. A message the sender sent again after a resume (its echo
   * was lost with the old socket, not the message) reaches everyone twice: show it once.
   */
  firstSight(key) {
    if (this.seenSays.has(key)) return false;
    this.seenSays.add(key);
    if (this.seenSays.size > 1000) this.seenSays.delete(this.seenSays.values().next().value);
    return true;
  }

  /**
   * Everything the server had for us is in: chat that went on an earlier socket and is still
   * unechoed was lost with it; send it again. (Chat sent on this socket after the welcome may
   * simply not be echoed yet: its echo comes after this pong.)
   */
  settle() {
    this.settling = false;
    for (const entry of this.pending.values()) {
      if (entry.ws === this.ws) continue;
      if (this.send(entry.message)) entry.ws = this.ws;
    }
    this.dispatchEvent(new CustomEvent("settled"));
  }

  onClose(ws, event) {
    if (ws !== this.ws) return; // a socket we already gave up on
    this.ws = null;
    this.stopTimers();
    if (this.ended) return;
    if (event.code === 4000) {
      // Another socket resumed this participant (another tab, or the same one after a
      // half-dead socket): it has the call now.
      this.ended = true;
      this.queue = [];
      this.setState("ended", { reason: event.reason || "resumed_elsewhere" });
      return;
    }
    const policy = event.code === 1008 && event.reason === "policy_violation";
    this.lost(this.restarting ? 0 : null, policy);
  }

  /** The socket is gone (not by a bye): reconnect after `delay` ms, or by the back-off. */
  lost(delay = null, policy = false) {
    this.stopTimers();
    this.restarting = false;
    if (!this.lostAt) this.lostAt = Date.now();
    this.setState("reconnecting");
    // Back off 0.5 s, 1 s, 2 s ... capped at 5 s; past the window resume fails and we rejoin.
    const wait = delay ?? (policy ? BACKOFF_POLICY_MS : Math.min(BACKOFF_MAX_MS, 500 * 2 ** this.attempt));
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), wait);
  }

  ping() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({ type: "ping" }));
    if (!this.pongTimer) this.pongTimer = setTimeout(() => this.drop("heartbeat_timeout"), this.pongTimeoutMs);
  }

  startHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pongTimer = null;
    this.pingTimer = setInterval(() => this.ping(), this.pingEveryMs);
  }

  stopTimers() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.retryTimer);
    this.pingTimer = this.pongTimer = this.connectTimer = this.retryTimer = null;
  }
}

function randomId() {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}
