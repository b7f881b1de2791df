// Chat with the caller and private staff advice: two message logs with a compose form each.
// Message text is untrusted (it may come from anyone holding the link): it only ever goes into
// textContent. Canned quick replies are shown in the staff language, whatever the caller reads.

import { t } from "./i18n.js";
import { clock, el } from "./staff-dom.js";

export class MessageLog {
  /**
   * @param {HTMLElement} list the role="log" container
   * @param {string} itemTestId data-testid of each entry ("chat-message" / "advice-message")
   * @param {() => string|null} ownPid this tab's participant id, to mark our own messages
   */
  constructor(list, itemTestId, ownPid) {
    this.list = list;
    this.itemTestId = itemTestId;
    this.ownPid = ownPid;
    this.seen = new Set();
  }

  add(message) {
    if (!this.list) return;
    // A rejoin after a lost resume can bring a message again under a new seq.
    if (message.id && this.seen.has(message.id)) return;
    if (message.id) this.seen.add(message.id);
    const mine = message.from === this.ownPid();
    const dataset = { fromRole: message.role || "unknown", id: message.id || "" };
    if (message.canned) dataset.canned = message.canned;
    const who = mine ? t("staff.chat.you") : senderLabel(message);
    const body = message.canned ? t(`canned.${message.canned}`) : message.text;
    const item = el(
      "div",
      { class: `msg from-${message.role || "unknown"}${mine ? " mine" : ""}`, "data-testid": this.itemTestId, dataset },
      el("span", { class: "meta" }, el("span", { class: "who" }, who), " ", el("time", {}, clock(message.ts || Date.now() / 1000))),
      el("span", { class: "body" }, body),
      message.canned ? " " : null,
      message.canned ? el("span", { class: "tag" }, t("staff.chat.quick_reply")) : null,
    );
    // Keep the newest in view unless the reader has scrolled back to read something.
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.append(item);
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }
}

function senderLabel(message) {
  if (message.role === "victim") return t("staff.role.victim");
  const role = t(`staff.role.${message.role}`);
  return message.name ? `${message.name} (${role})` : role;
}

/**
 * Wire a compose form: Enter or the button sends; the text stays if it could not be sent.
 * `send(text)` returns true when the frame went out.
 */
export function bindCompose(form, input, send, onFail) {
  if (!form || !input) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (send(text)) {
      input.value = "";
      input.focus();
    } else {
      onFail();
    }
  });
}
