// The caller's messages: free text and quick replies out, everyone's chat in. Messages appear
// when the server echoes them back (so what is shown is what was delivered); anything typed
// while the socket is down waits, marked as sending, and goes out when it is back. The socket
// (signal.js sendReliably) also sends again whatever a dying socket swallowed.

export class ChatView {
  /**
   * @param {HTMLElement} log the chat-log container
   * @param {(message: object) => {cid: string, sent: boolean}} send sends a frame reliably
   * @param {(key: string) => string} tr the page's translator
   */
  constructor(log, send, tr) {
    this.log = log;
    this.send = send;
    this.tr = tr;
    this.seen = new Set();
    this.waiting = new Map(); // cid -> placeholder element, until the echo arrives
  }

  sendText(text) {
    const trimmed = text.trim();
    if (!trimmed) return false;
    this.post({ type: "chat", text: trimmed.slice(0, 2000) });
    return true;
  }

  sendCanned(id) {
    this.post({ type: "chat", canned: id });
  }

  post(frame) {
    const { cid, sent } = this.send(frame);
    if (sent) return;
    const element = this.render({ role: "victim", ...frame }, true);
    element.classList.add("waiting");
    element.dataset.testid = "chat-pending"; // not delivered yet: not a chat-message
    const note = document.createElement("span");
    note.className = "sending";
    note.dataset.i18n = "victim.chat.sending";
    note.textContent = this.tr("victim.chat.sending");
    element.append(note);
    this.waiting.set(cid, element);
  }

  /** A `chat` frame from the server (ours echoed, or the staff's). */
  add(message, selfPid) {
    const placeholder = message.cid && this.waiting.get(message.cid);
    if (placeholder) {
      placeholder.remove();
      this.waiting.delete(message.cid);
    }
    if (message.id) {
      if (this.seen.has(message.id)) return;
      this.seen.add(message.id);
    }
    this.render(message, message.from === selfPid || message.role === "victim");
  }

  render(message, mine) {
    const item = document.createElement("p");
    item.className = mine ? "msg mine" : "msg";
    item.dataset.testid = "chat-message";
    item.dataset.fromRole = message.role || "";
    const who = document.createElement("span");
    who.className = "who";
    if (mine) {
      who.dataset.i18n = "victim.chat.you";
      who.textContent = this.tr("victim.chat.you");
    } else {
      who.textContent = message.name || "";
    }
    const text = document.createElement("span");
    text.className = "text";
    if (message.canned) {
      // Quick replies travel as ids: shown in the caller's language, and re-translated on a switch.
      item.dataset.canned = message.canned;
      text.dataset.i18n = `canned.${message.canned}`;
      text.textContent = this.tr(`canned.${message.canned}`);
    } else {
      text.textContent = message.text || "";
      text.dir = "auto";
    }
    item.append(who, text);
    // Keep the newest in view, unless the caller scrolled back to read.
    const atEnd = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    this.log.append(item);
    if (atEnd) this.log.scrollTop = this.log.scrollHeight;
    return item;
  }
}
