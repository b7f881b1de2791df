// The signalling socket: hello/welcome, per-participant seq, resume after a drop, heartbeats.
// docs/protocol.md is the contract. One instance per tab; it knows nothing of media or pages.

const PROTOCOL_VERSION = 1;
const PING_EVERY_MS = 15000;
const PONG_TIMEOUT_MS = 10000;

export class Signal extends EventTarget {
  /**
   * @param {object} join what to say in a fresh hello: {credential} for the caller,
   *   {session} for staff in a session, {} for the staff lobby.
   */
  constructor(join, url = defaultUrl()) {
    super();
    this.join = join;
    this.url = url;
    this.pid = null;
    this.role = null;
    this.secret = null;
    this.lastSeq = 0;
    this.resumeWindow = 60;
    this.iceServers = [];
    this.state = "idle";
    this.ws = null;
    this.ended = false;
    this.lostAt = 0;
    this.attempt = 0;
    this.pingTimer = null;
    this.pongTimer = null;
    this.restarting = false;
  }

  start() {
    this.open();
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  /** Leave for good (quick exit, hang up): no resume. */
  close(leave = true) {
    this.ended = true;
    if (leave) this.send({ type: "control", op: "leave" });
    this.stopHeartbeat();
    if (this.ws) this.ws.close(1000, "bye");
    this.setState("ended");
  }

  /** Drop the socket as a network failure would; it resumes by itself. */
  drop() {
    if (this.ws) this.ws.close(4001, "dropped");
  }

  setState(state, detail = {}) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  open() {
    if (this.ended) return;
    this.setState(this.pid ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      const hello = { type: "hello", v: PROTOCOL_VERSION };
      if (this.pid && this.secret) {
        hello.resume = { pid: this.pid, secret: this.secret, last_seq: this.lastSeq };
      } else {
        Object.assign(hello, this.join);
      }
      ws.send(JSON.stringify(hello));
      this.startHeartbeat();
    });
    ws.addEventListener("message", (event) => this.onFrame(event.data));
    ws.addEventListener("close", (event) => this.onClose(ws, event));
  }

  onFrame(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === "pong") {
      clearTimeout(this.pongTimer);
      return;
    }
    if (typeof message.seq === "number") {
      if (message.seq <= this.lastSeq) return; // already seen (a replay overlap)
      this.lastSeq = message.seq;
    }
    if (message.type === "welcome") {
      const fresh = message.pid !== this.pid;
      this.pid = message.pid;
      this.role = message.role;
      this.secret = message.resume_secret;
      this.resumeWindow = message.resume_window || this.resumeWindow;
      this.iceServers = message.ice_servers || [];
      if (fresh) this.lastSeq = 0;
      this.attempt = 0;
      this.lostAt = 0;
      this.setState("connected");
      this.dispatchEvent(new CustomEvent("welcome", { detail: { ...message, fresh } }));
      return;
    }
    if (message.type === "error" && message.code === "resume_failed") {
      // The old place is gone: join afresh on the same socket.
      this.pid = null;
      this.secret = null;
      this.lastSeq = 0;
      this.send({ type: "hello", v: PROTOCOL_VERSION, ...this.join });
      return;
    }
    if (message.type === "bye" && message.reason === "server_shutdown") {
      // This server is going away. With several nodes another one has our place: reconnect
      // and resume. A single server restarting has lost it: the resume fails and we rejoin.
      this.restarting = true;
      return;
    }
    if (message.type === "bye") {
      this.ended = true;
      this.stopHeartbeat();
      this.setState("ended", { reason: message.reason });
    }
    this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    this.stopHeartbeat();
    const final = event.code === 1000 || event.code === 4000 || event.code === 1008;
    if (this.ended || (final && !this.restarting)) {
      if (!this.ended) {
        this.ended = true;
        this.setState("ended", { reason: event.reason || "closed" });
      }
      return;
    }
    this.restarting = false;
    if (!this.lostAt) this.lostAt = Date.now();
    this.setState("reconnecting");
    // Back off 0.5 s, 1 s, 2 s ... capped at 5 s; past the window resume fails and we rejoin.
    const delay = Math.min(5000, 500 * 2 ** this.attempt);
    this.attempt += 1;
    setTimeout(() => this.open(), delay);
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.pingTimer = setInterval(() => {
      if (!this.send({ type: "ping" })) return;
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.drop(), PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  stopHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}
