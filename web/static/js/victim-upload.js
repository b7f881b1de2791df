// "Send a photo": a photo or video picked on the phone goes to /j/upload as the raw body,
// authorised by the call's credential (a bearer header, never a cookie). The file is not kept
// in the page after it is sent.

export class PhotoUpload {
  /** credential() gives the live credential; say(element, key) shows a translated string. */
  constructor(input, status, credential, say) {
    this.input = input;
    this.status = status;
    this.credential = credential;
    this.say = say;
    input.addEventListener("change", () => this.send());
  }

  async send() {
    const file = this.input.files && this.input.files[0];
    if (!file) return;
    this.show("sending", "victim.upload.sending");
    this.input.disabled = true; // one file at a time on a weak network
    let key = "victim.upload.failed";
    try {
      const response = await fetch("/j/upload", {
        method: "POST",
        credentials: "omit",
        cache: "no-store",
        headers: { Authorization: `Bearer ${this.credential()}`, "Content-Type": file.type || "application/octet-stream" },
        body: file,
      });
      const code = response.ok ? "" : ((await response.json().catch(() => ({}))).error || "");
      if (response.ok) key = "victim.upload.sent";
      else if (code === "quota_exceeded") key = "victim.upload.quota";
      else if (response.status === 429) key = "victim.upload.busy";
      else if (response.status === 413) key = "victim.upload.too_large";
      else if (response.status === 415) key = "victim.upload.unsupported";
    } catch {
      key = "victim.upload.failed";
    } finally {
      this.input.value = ""; // the same file can be picked again, and nothing lingers
      this.input.disabled = false;
    }
    this.show(key === "victim.upload.sent" ? "sent" : "failed", key);
  }

  show(state, key) {
    this.status.dataset.state = state;
    this.status.hidden = false;
    this.say(this.status, key);
  }
}
