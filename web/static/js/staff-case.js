// The call view's "Risk and referrals" panel: the default risk questionnaire (DASH) rendered
// from /api/forms, scored and stored by the server, and the referral outcomes of the session.
// The server does the scoring and the downgrade rule; this module only shows what it decides,
// so a refused band (e.g. a downgrade without a reason) shows the server's own message.

import { t } from "./i18n.js";
import { api } from "./staff-api.js";
import { byTestId, el, show } from "./staff-dom.js";

// [value sent, label key]: the server's answers are yes, no and not_known.
const ANSWERS = [["yes", "yes"], ["no", "no"], ["not_known", "unknown"]];

export class CasePanel {
  constructor(root) {
    this.root = root;
    this.session = root.dataset.session;
    this.form = null; // the questionnaire being shown, as /api/forms returns it
    this.loaded = false;
    this.riskForm = byTestId(root, "risk-form");
    this.referralForm = byTestId(root, "referral-form");
    this.list = byTestId(root, "referral-list");
  }

  start() {
    // Load on first opening: most calls never need the form, and the page stays light.
    this.root.addEventListener("toggle", () => {
      if (this.root.open && !this.loaded) {
        this.loaded = true;
        this.load();
      }
    });
    if (this.root.open) {
      this.loaded = true;
      this.load();
    }
    this.riskForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submitRisk();
    });
    this.referralForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submitReferral();
    });
    const kind = byTestId(this.root, "referral-kind");
    kind.addEventListener("change", () => {
      // Another agency must be named (the server refuses it otherwise).
      show(byTestId(this.root, "referral-agency-field"), kind.value === "other_agency");
    });
  }

  async load() {
    const title = byTestId(this.root, "risk-form-title");
    try {
      const { forms } = await api("GET", "/api/forms");
      this.form = forms.find((f) => f.default) || forms[0];
      title.textContent = this.form.title;
      title.classList.remove("hint");
      byTestId(this.root, "risk-questions").replaceChildren(
        ...this.form.questions.map((q) => this.question(q)),
      );
    } catch (err) {
      title.textContent = err.message;
      title.classList.add("error");
      return;
    }
    try {
      const { case: saved } = await api("GET", `/api/sessions/${this.session}/case`);
      if (saved.assessment) this.showResult(saved.assessment, saved.band);
      for (const referral of saved.referrals || []) this.addReferral(referral);
    } catch {
      /* nothing saved yet is shown as nothing; saving still reports its own errors */
    }
    this.showEmpty();
  }

  question(q) {
    const id = `risk-${q.id}`;
    const item = el("li", { class: "risk-question", dataset: { question: q.id } });
    if (q.kind === "yes_no_unknown" || q.kind === "choice") {
      const options = q.kind === "choice"
        ? q.options.map((o) => [o.value, o.label])
        : ANSWERS.map(([value, key]) => [value, t(`handler.case.answer.${key}`), key]);
      const group = el("fieldset", { class: "choices" }, el("legend", {}, q.text));
      for (const [value, label, key] of options) {
        const input = el("input", {
          type: "radio", name: id, value, "data-testid": `risk-q-${q.id}-${key || value}`,
        });
        group.append(el("label", {}, input, ` ${label}`));
      }
      item.append(group);
    } else {
      const input = el("textarea", {
        id, name: id, rows: 2, maxlength: q.max_length || 2000, "data-testid": `risk-q-${q.id}`,
      });
      item.append(el("label", { for: id }, q.text), input);
    }
    return item;
  }

  answers() {
    const out = {};
    for (const q of this.form.questions) {
      const name = `risk-${q.id}`;
      if (q.kind === "text") {
        const value = this.riskForm.elements[name].value.trim();
        if (value) out[q.id] = value;
      } else {
        const picked = this.riskForm.querySelector(`input[name="${name}"]:checked`);
        if (picked) out[q.id] = picked.value;
      }
    }
    return out;
  }

  async submitRisk() {
    if (!this.form) return;
    const error = byTestId(this.root, "risk-error");
    const button = byTestId(this.root, "risk-submit");
    const body = { form: this.form.id, answers: this.answers() };
    const band = byTestId(this.root, "risk-final-band").value;
    const reason = byTestId(this.root, "risk-reason").value.trim();
    if (band) body.final_band = band;
    if (reason) body.reason = reason;
    body.judgement_marac = byTestId(this.root, "risk-judgement-marac").checked;
    show(error, false);
    button.disabled = true;
    try {
      await api("POST", `/api/sessions/${this.session}/risk`, body);
      // The session's band comes from all its assessments (an incomplete form sets none).
      const { case: saved } = await api("GET", `/api/sessions/${this.session}/case`);
      this.showResult(saved.assessment, saved.band);
    } catch (err) {
      error.textContent = err.message;
      show(error, true);
    } finally {
      button.disabled = false;
    }
  }

  /** The latest assessment, and the session's band: lowered bands say so, from what, by
   *  whom and why; an incomplete form says it set no band. */
  showResult(a, state) {
    const result = byTestId(this.root, "risk-result");
    const parts = [];
    if (a.complete === false) {
      parts.push(t("handler.case.incomplete", { count: (a.unanswered || []).length }));
    } else {
      const band = this.bandLabel(a.final_band);
      parts.push(a.score === null || a.score === undefined
        ? t("handler.case.result_band", { band })
        : t("handler.case.result", { score: a.score, band }));
      if (a.computed_band && a.computed_band !== a.final_band) {
        parts.push(t("handler.case.computed", { band: this.bandLabel(a.computed_band) }));
      }
      if (a.marac_suggested) parts.push(t("handler.case.marac"));
    }
    const current = state && state.final_band;
    if (current && (a.complete === false || state.downgraded)) {
      parts.push(t("handler.case.band_now", { band: this.bandLabel(current) }));
    }
    if (state && state.downgraded) {
      parts.push(t("handler.case.lowered", {
        from: this.bandLabel(state.highest_band), who: state.by_name || state.by_role || "",
        reason: state.reason || "",
      }));
    }
    result.textContent = parts.join(" ");
    result.dataset.band = current || "none";
    result.dataset.downgraded = state && state.downgraded ? "true" : "false";
  }

  bandLabel(band) {
    const known = this.form && this.form.bands.find((b) => b.id === band);
    return known ? known.label : band;
  }

  async submitReferral() {
    const error = byTestId(this.root, "referral-error");
    const button = byTestId(this.root, "referral-submit");
    const kind = byTestId(this.root, "referral-kind").value;
    const body = {
      kind,
      status: byTestId(this.root, "referral-status").value,
      safe_to_call: this.referralForm.querySelector('input[name="referral-safe"]:checked').value,
      notes: byTestId(this.root, "referral-notes").value.trim(),
    };
    if (kind === "other_agency") body.agency = byTestId(this.root, "referral-agency").value.trim();
    show(error, false);
    button.disabled = true;
    try {
      const { referral } = await api("POST", `/api/sessions/${this.session}/referrals`, body);
      this.addReferral(referral);
      byTestId(this.root, "referral-notes").value = "";
      this.showEmpty();
    } catch (err) {
      error.textContent = err.message;
      show(error, true);
    } finally {
      button.disabled = false;
    }
  }

  addReferral(r) {
    const option = byTestId(this.root, "referral-kind").querySelector(`option[value="${r.kind}"]`);
    const kind = option ? option.textContent : r.kind;
    const text = t("handler.case.referral_item", {
      kind: r.agency ? `${kind} (${r.agency})` : kind,
      status: r.status,
      safe: t(`handler.case.answer.${r.safe_to_call}`),
    });
    const item = el("li", { dataset: { kind: r.kind, status: r.status } }, text);
    if (r.notes) item.append(el("br"), el("span", { class: "hint" }, r.notes));
    this.list.append(item);
  }

  showEmpty() {
    const empty = this.list.querySelector("[data-empty]");
    const any = this.list.querySelector("li:not([data-empty])");
    if (any && empty) empty.remove();
    if (!any && !empty) this.list.append(el("li", { dataset: { empty: "1" } }, t("handler.case.no_referrals")));
  }
}
