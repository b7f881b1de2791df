// The media mesh: one RTCPeerConnection per peer, "perfect negotiation" so either side may
// (re)negotiate at any time, and restartIce() when a connection fails (a network change).

const STALL_MS = 4000;
const MAX_STALL_RESTARTS = 3;
const FIRST_OFFER_WAIT_MS = 1500;

export class Mesh extends EventTarget {
  /**
   * @param {import("./signal.js").Signal} signal
   * @param {MediaStream|null} local what this participant sends (may be null: receive only)
   * @param {(peer: {pid: string, role: string}) => boolean} wants which peers to connect to
   */
  constructor(signal, local, wants = () => true) {
    super();
    this.signal = signal;
    this.local = local;
    this.wants = wants;
    this.peers = new Map(); // pid -> Link
    signal.addEventListener("welcome", (e) => this.onWelcome(e.detail));
    signal.addEventListener("peer", (e) => this.onPeer(e.detail));
    signal.addEventListener("signal", (e) => this.onSignal(e.detail));
    signal.addEventListener("state", (e) => {
      if (e.detail.state === "ended") this.close();
    });
  }

  onWelcome(welcome) {
    if (welcome.fresh) {
      // A new pid: every old connection belonged to the old one.
      for (const pid of [...this.peers.keys()]) this.drop(pid);
    }
    for (const peer of welcome.peers) {
      // A newcomer lets those already in the call offer first: they offer as soon as they
      // hear it joined, and both offering at once (glare) is slow and, in Chrome, fragile.
      const theyOffer = welcome.fresh && peer.state !== "away";
      if (peer.state !== "away" || !this.peers.has(peer.pid)) this.ensure(peer, theyOffer);
    }
  }

  onPeer(message) {
    if (message.op === "joined") this.ensure(message);
    else if (message.op === "left") this.drop(message.pid);
  }

  ensure(peer, theyOffer = false) {
    if (this.peers.has(peer.pid) || !this.wants(peer)) return this.peers.get(peer.pid);
    const link = new Link(this, peer, theyOffer);
    this.peers.set(peer.pid, link);
    return link;
  }

  drop(pid) {
    const link = this.peers.get(pid);
    if (!link) return;
    this.peers.delete(pid);
    link.close();
    this.dispatchEvent(new CustomEvent("peer-gone", { detail: { pid } }));
  }

  async onSignal(message) {
    let link = this.peers.get(message.from);
    if (!link) link = this.ensure({ pid: message.from, role: "unknown" });
    if (link) await link.onSignal(message);
  }

  /** Replace what we send (camera switched, camera off): renegotiates only if needed. */
  async setLocal(stream) {
    this.local = stream;
    for (const link of this.peers.values()) await link.syncTracks();
  }

  close() {
    for (const pid of [...this.peers.keys()]) this.drop(pid);
  }
}

class Link {
  constructor(mesh, peer, theyOffer = false) {
    this.mesh = mesh;
    this.pid = peer.pid;
    this.role = peer.role;
    // Exactly one side is polite: it yields when both offer at once.
    this.polite = mesh.signal.pid > peer.pid;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.answerPending = false;
    this.senders = new Map(); // kind -> RTCRtpSender
    this.stream = new MediaStream();
    const pc = new RTCPeerConnection({ iceServers: mesh.signal.iceServers });
    this.pc = pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        this.send({ description: pc.localDescription });
      } catch (err) {
        console.warn("offer failed", err);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => this.send({ candidate: candidate ? candidate.toJSON() : null });
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === "failed") pc.restartIce();
    };
    // Chrome can come out of a glare rollback (both sides offered at once) with no ICE
    // candidates gathered: the link then sits in ICE "new" for ever, never "failed". If ICE has
    // not even started a while after an exchange completed, restart it: a fresh offer and a
    // fresh gathering. The polite side waits longer, so the two sides do not restart together.
    this.stallTimer = null;
    this.stallRestarts = 0;
    pc.onsignalingstatechange = () => {
      if (pc.signalingState === "stable") this.watchStall();
    };
    pc.onconnectionstatechange = () => {
      const state = pc.connectionState;
      this.mesh.dispatchEvent(new CustomEvent("link-state", { detail: { pid: this.pid, role: this.role, state } }));
      if (state === "connected") {
        this.mesh.signal.send({ type: "control", op: "media", state: "connected", peer: this.pid });
      } else if (state === "failed") {
        pc.restartIce();
      }
    };
    pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] || this.stream;
      if (!streams[0]) this.stream.addTrack(track);
      this.mesh.dispatchEvent(new CustomEvent("track", { detail: { pid: this.pid, role: this.role, track, stream } }));
    };
    // Our tracks wait for the peer's first offer (or a short while, if it has nothing to send).
    this.holding = theyOffer;
    this.holdTimer = theyOffer ? setTimeout(() => this.release(), FIRST_OFFER_WAIT_MS) : null;
    // Receive audio and video even when we send nothing, so the other side's offer has a place.
    this.syncTracks();
  }

  release() {
    if (!this.holding) return;
    this.holding = false;
    clearTimeout(this.holdTimer);
    this.syncTracks();
  }

  send(body) {
    this.mesh.signal.send({ type: "signal", to: this.pid, ...body });
  }

  async syncTracks() {
    if (this.holding) return;
    const local = this.mesh.local;
    for (const kind of ["audio", "video"]) {
      const track = local ? local.getTracks().find((t) => t.kind === kind) || null : null;
      const sender = this.senders.get(kind);
      if (sender) {
        await sender.replaceTrack(track);
      } else if (track) {
        this.senders.set(kind, this.pc.addTrack(track, local));
      }
    }
  }

  async onSignal({ description, candidate }) {
    const pc = this.pc;
    try {
      if (description) {
        // Signals are handled as they arrive, not one after another: an offer can arrive while
        // the answer before it is still being applied. That is no collision (the W3C example's
        // isSettingRemoteAnswerPending); without this the impolite side drops the offer.
        const readyForOffer = !this.makingOffer && (pc.signalingState === "stable" || this.answerPending);
        const collision = description.type === "offer" && !readyForOffer;
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        this.answerPending = description.type === "answer";
        try {
          await pc.setRemoteDescription(description);
        } finally {
          this.answerPending = false;
        }
        if (description.type === "offer") {
          await pc.setLocalDescription();
          this.send({ description: pc.localDescription });
          this.release(); // now our own tracks can follow, in an offer of ours
        }
      } else if (candidate && candidate.candidate) {
        // An empty candidate is the end-of-candidates marker: browsers need nothing for it.
        try {
          await pc.addIceCandidate(candidate);
        } catch (err) {
          if (!this.ignoreOffer) throw err;
        }
      }
    } catch (err) {
      console.warn("signal failed", err);
    }
  }

  /** Connection quality for the console: round trip, loss, bitrate, resolution, frames. */
  async quality() {
    const stats = await this.pc.getStats();
    const out = { rtt: null, lost: 0, received: 0, bytes: 0, width: null, height: null, framesDecoded: 0, at: performance.now() };
    stats.forEach((report) => {
      if (report.type === "candidate-pair" && report.state === "succeeded" && report.nominated) {
        out.rtt = report.currentRoundTripTime ?? out.rtt;
      }
      if (report.type === "inbound-rtp") {
        out.lost += report.packetsLost || 0;
        out.received += report.packetsReceived || 0;
        out.bytes += report.bytesReceived || 0;
        if (report.kind === "video") {
          out.width = report.frameWidth ?? out.width;
          out.height = report.frameHeight ?? out.height;
          out.framesDecoded = report.framesDecoded || 0;
        }
      }
    });
    return out;
  }

  watchStall() {
    clearTimeout(this.stallTimer);
    if (!this.pc.remoteDescription || this.stallRestarts >= MAX_STALL_RESTARTS) return;
    this.stallTimer = setTimeout(() => {
      const pc = this.pc;
      if (pc.signalingState === "stable" && pc.iceConnectionState === "new") {
        this.stallRestarts += 1;
        pc.restartIce();
      }
    }, this.polite ? STALL_MS * 1.5 : STALL_MS);
  }

  close() {
    clearTimeout(this.stallTimer);
    clearTimeout(this.holdTimer);
    this.pc.close();
  }
}
