// The media mesh: one RTCPeerConnection per peer, "perfect negotiation" so either side may
// (re)negotiate at any time, and ICE restarts when a path is lost (a blackout, Wi-Fi to 4G).
//
// A lost path is restarted quickly, not after Chrome's "failed" (which takes 30 s): the
// impolite side restarts 1.5 s into "disconnected", the polite side 3 s in, and a restart
// that has not connected after 8 s is tried again for as long as the peer is in the call.
// Signals go through the socket's queue, so an offer made while the socket is reconnecting
// is sent when it is back, and a tab whose socket had dropped restarts ICE on every link at
// once when it resumes: its network has probably changed. What a dying socket swallowed
// before anyone knew it was dead is gone (the server replays what it sent us, but nothing
// replays what we sent): an offer of ours still unanswered after a resume, or for
// RESTART_RETRY_MS whatever ICE is doing, is sent again, so two sides can never both wait for
// an answer to an offer the other never saw.

const STALL_MS = 4000;
const MAX_STALL_RESTARTS = 3;
const FIRST_OFFER_WAIT_MS = 1500;
const DISCONNECTED_RESTART_MS = 1500;
const RESTART_RETRY_MS = 8000;
// A path that carries nothing back while we send on it is lost long before ICE says so (Chrome
// takes about 6 s to call it "disconnected"): when a phone moves from Wi-Fi to 4G its old
// address is simply gone. The peer answers every stream with feedback (RTCP, transport-cc)
// many times a second, so no bytes at all for SILENT_MS means the path is gone.
const LIVENESS_MS = 500;
const SILENT_MS = 1500;

/** Whether this browser can make WebRTC calls at all (in-app browsers and old phones may not). */
export const WEBRTC = typeof window.RTCPeerConnection === "function";

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
    this.sendLimits = null; // {maxBitrate, scaleResolutionDownBy} for our video, or null
    if (!WEBRTC) return; // nothing to connect: the page falls back to still pictures
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
    } else {
      // Our socket dropped and came back: the network under us may have changed, and a path
      // that still looks connected may be dead. Restarting ICE costs one exchange and keeps
      // the old path until a new one is chosen. An offer we sent may have died with the socket.
      for (const link of this.peers.values()) link.restart("resumed", { resend: true });
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

  /** Limit our video (a weak uplink): {maxBitrate (bps), scaleResolutionDownBy}, or null. */
  async limitVideo(limits) {
    this.sendLimits = limits;
    for (const link of this.peers.values()) await link.applyLimits();
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
    this.everConnected = false;
    this.restarts = 0;
    this.restartTimer = null;
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
    this.gatheredTypes = new Set(); // host, srflx, prflx, relay: tells "no TURN path" apart
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && candidate.type) this.gatheredTypes.add(candidate.type);
      else if (candidate && / typ (\w+)/.test(candidate.candidate)) this.gatheredTypes.add(/ typ (\w+)/.exec(candidate.candidate)[1]);
      this.send({ candidate: candidate ? candidate.toJSON() : null });
    };
    pc.oniceconnectionstatechange = () => this.onIceState(pc.iceConnectionState);
    // Chrome can come out of a glare rollback (both sides offered at once) with no ICE
    // candidates gathered: the link then sits in ICE "new" for ever, never "failed". If ICE has
    // not even started a while after an exchange completed, restart it: a fresh offer and a
    // fresh gathering. The polite side waits longer, so the two sides do not restart together.
    this.stallTimer = null;
    this.stallRestarts = 0;
    this.offerTimer = null;
    pc.onsignalingstatechange = () => {
      if (pc.signalingState === "stable") this.watchStall();
      this.watchOffer();
    };
    pc.onconnectionstatechange = () => {
      const state = pc.connectionState;
      this.mesh.dispatchEvent(new CustomEvent("link-state", { detail: { pid: this.pid, role: this.role, state } }));
      if (state === "connected") {
        this.everConnected = true;
        this.mesh.signal.send({ type: "control", op: "media", state: "connected", peer: this.pid });
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
    this.lastBytes = -1;
    this.lastBytesAt = 0;
    this.silent = false;
    this.checking = false;
    this.liveTimer = setInterval(() => this.checkLiveness(), LIVENESS_MS);
  }

  /** While we send, the peer's feedback must keep arriving; if it stops, say so ("silent"
   *  event: the page decides what to do with its socket) and restart ICE at once. */
  async checkLiveness() {
    const pc = this.pc;
    const up = pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed";
    const sending = [...this.senders.values()].some((s) => s.track && s.track.readyState === "live");
    if (!up || !sending || this.checking) {
      this.lastBytes = -1;
      return;
    }
    this.checking = true;
    try {
      let bytes = 0;
      (await pc.getStats()).forEach((report) => {
        if (report.type === "candidate-pair") bytes += report.bytesReceived || 0;
      });
      const now = performance.now();
      if (bytes !== this.lastBytes) {
        this.lastBytes = bytes;
        this.lastBytesAt = now;
        this.silent = false;
      } else if (!this.silent && now - this.lastBytesAt >= SILENT_MS) {
        this.silent = true;
        this.mesh.dispatchEvent(new CustomEvent("silent", { detail: { pid: this.pid, role: this.role } }));
        this.restart("silent");
      }
    } catch {
      // closed meanwhile
    } finally {
      this.checking = false;
    }
  }

  onIceState(state) {
    if (state === "connected" || state === "completed") {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
      this.restarts = 0;
    } else if (state === "disconnected") {
      this.scheduleRestart(this.polite ? DISCONNECTED_RESTART_MS * 2 : DISCONNECTED_RESTART_MS);
    } else if (state === "failed") {
      this.restart("failed");
    }
    this.mesh.dispatchEvent(new CustomEvent("ice-state", { detail: { pid: this.pid, role: this.role, state } }));
  }

  scheduleRestart(ms) {
    if (this.restartTimer) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      const state = this.pc.iceConnectionState;
      if (state !== "connected" && state !== "completed" && this.pc.signalingState !== "closed") {
        this.restart("lost");
      }
    }, ms);
  }

  /**
   * An offer of ours unanswered for RESTART_RETRY_MS is sent again, and again, whatever ICE is
   * doing: it may have died with a socket, and the peer (if it is the impolite side, and
   * waiting for an answer to its own offer) will never ask. Sending it again is harmless (a
   * peer that had it answers again, and the extra answer is ignored); taking it back
   * (rollback) is not, in Chrome: the next offer can reorder its m-lines.
   */
  watchOffer() {
    clearTimeout(this.offerTimer);
    this.offerTimer = null;
    if (this.pc.signalingState !== "have-local-offer") return;
    this.offerTimer = setTimeout(() => {
      this.offerTimer = null;
      this.resendOffer();
      this.watchOffer();
    }, RESTART_RETRY_MS);
  }

  resendOffer() {
    const pc = this.pc;
    if (pc.signalingState === "have-local-offer" && !this.makingOffer && pc.pendingLocalDescription) {
      this.send({ description: pc.pendingLocalDescription });
    }
  }

  /**
   * A fresh ICE exchange (new credentials, new candidates, the best path found again).
   * `resend`: an offer of ours still waiting for its answer is sent again first (it may have
   * died with the socket we just replaced).
   */
  restart(why, { resend = false } = {}) {
    const pc = this.pc;
    if (pc.signalingState === "closed") return;
    this.restarts += 1;
    if (resend) {
      this.resendOffer();
      this.watchOffer();
    }
    pc.restartIce();
    this.mesh.dispatchEvent(new CustomEvent("ice-restart", { detail: { pid: this.pid, why } }));
    // Still not through a while later (the offer may be waiting for the socket, or the path
    // is still down): try again, for as long as the peer is in the call.
    clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.scheduleRestart(RESTART_RETRY_MS);
  }

  release() {
    if (!this.holding) return;
    this.holding = false;
    clearTimeout(this.holdTimer);
    this.syncTracks();
  }

  send(body) {
    this.mesh.signal.send({ type: "signal", to: this.pid, ...body }, { queue: true });
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
    await this.applyLimits();
  }

  /** Our video's bitrate and resolution cap, and the caller's voice before their picture. */
  async applyLimits() {
    for (const [kind, sender] of this.senders) {
      const params = sender.getParameters();
      if (!params.encodings || !params.encodings.length) continue; // not negotiated yet
      const encoding = params.encodings[0];
      if (kind === "audio") {
        encoding.priority = "high";
        encoding.networkPriority = "high";
      } else {
        const limits = this.mesh.sendLimits;
        if (limits) {
          encoding.maxBitrate = limits.maxBitrate;
          encoding.scaleResolutionDownBy = limits.scaleResolutionDownBy;
        } else {
          delete encoding.maxBitrate;
          encoding.scaleResolutionDownBy = 1;
        }
      }
      try {
        await sender.setParameters(params);
      } catch {
        // A renegotiation is under way; the next change applies the limits again.
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

  /** What arrives from this peer, and by which path: for the console's truthful status. */
  async quality() {
    const stats = await this.pc.getStats();
    const out = {
      rtt: null, lost: 0, received: 0, bytes: 0, width: null, height: null,
      framesDecoded: 0, framesPerSecond: null, hasVideo: false, hasAudio: false,
      audioPackets: 0, concealedSamples: 0, totalSamples: 0, path: null,
      ice: this.pc.iceConnectionState, at: performance.now(),
    };
    let pair = null;
    stats.forEach((report) => {
      if (report.type === "transport" && report.selectedCandidatePairId) pair = stats.get(report.selectedCandidatePairId);
      if (report.type === "candidate-pair" && report.state === "succeeded" && report.nominated && !pair) pair = report;
      if (report.type === "inbound-rtp") {
        out.lost += report.packetsLost || 0;
        out.received += report.packetsReceived || 0;
        out.bytes += report.bytesReceived || 0;
        if (report.kind === "video") {
          out.hasVideo = true;
          out.width = report.frameWidth ?? out.width;
          out.height = report.frameHeight ?? out.height;
          out.framesDecoded += report.framesDecoded || 0;
          out.framesPerSecond = report.framesPerSecond ?? out.framesPerSecond;
        } else if (report.kind === "audio") {
          out.hasAudio = true;
          out.audioPackets += report.packetsReceived || 0;
          out.concealedSamples += report.concealedSamples || 0;
          out.totalSamples += report.totalSamplesReceived || 0;
        }
      }
    });
    if (pair) {
      out.rtt = pair.currentRoundTripTime ?? null;
      const local = stats.get(pair.localCandidateId);
      const remote = stats.get(pair.remoteCandidateId);
      out.path = {
        local: local ? local.candidateType : null,
        remote: remote ? remote.candidateType : null,
        protocol: local ? local.protocol : null,
        relayProtocol: local ? local.relayProtocol || null : null,
        availableOutgoingBitrate: pair.availableOutgoingBitrate ?? null,
      };
    }
    return out;
  }

  /** What we send this peer: for the caller's ladder (the bandwidth estimate, the picture). */
  async sending() {
    const stats = await this.pc.getStats();
    const out = { availableOutgoingBitrate: null, width: null, height: null, framesPerSecond: null, limitation: null, bytesSent: 0 };
    stats.forEach((report) => {
      if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") {
        out.availableOutgoingBitrate = report.availableOutgoingBitrate ?? out.availableOutgoingBitrate;
      }
      if (report.type === "outbound-rtp" && report.kind === "video") {
        out.width = report.frameWidth ?? out.width;
        out.height = report.frameHeight ?? out.height;
        out.framesPerSecond = report.framesPerSecond ?? out.framesPerSecond;
        out.limitation = report.qualityLimitationReason ?? out.limitation;
        out.bytesSent += report.bytesSent || 0;
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
    clearInterval(this.liveTimer);
    clearTimeout(this.stallTimer);
    clearTimeout(this.holdTimer);
    clearTimeout(this.restartTimer);
    clearTimeout(this.offerTimer);
    this.pc.close();
  }
}
