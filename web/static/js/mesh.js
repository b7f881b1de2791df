// The media mesh: one RTCPeerConnection per peer, "perfect negotiation" so either side may
// (re)negotiate at any time, and restartIce() when a connection fails (a network change).

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
      if (peer.state !== "away" || !this.peers.has(peer.pid)) this.ensure(peer);
    }
  }

  onPeer(message) {
    if (message.op === "joined") this.ensure(message);
    else if (message.op === "left") this.drop(message.pid);
  }

  ensure(peer) {
    if (this.peers.has(peer.pid) || !this.wants(peer)) return this.peers.get(peer.pid);
    const link = new Link(this, peer);
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
  constructor(mesh, peer) {
    this.mesh = mesh;
    this.pid = peer.pid;
    this.role = peer.role;
    // Exactly one side is polite: it yields when both offer at once.
    this.polite = mesh.signal.pid > peer.pid;
    this.makingOffer = false;
    this.ignoreOffer = false;
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
    // Receive audio and video even when we send nothing, so the other side's offer has a place.
    this.syncTracks();
  }

  send(body) {
    this.mesh.signal.send({ type: "signal", to: this.pid, ...body });
  }

  async syncTracks() {
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
        const collision = description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        await pc.setRemoteDescription(description);
        if (description.type === "offer") {
          await pc.setLocalDescription();
          this.send({ description: pc.localDescription });
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

  close() {
    this.pc.close();
  }
}
