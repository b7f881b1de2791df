// Message catalogues: every string a person reads comes from i18n/<lang>.json.
// Keys are dotted ("consent.title"); canned quick replies are "canned.<id>".

export const LANGUAGES = { en: "English", cy: "Cymraeg" };
const RTL = new Set(["ar", "he", "fa", "ur"]);

let current = { lang: "en", strings: {} };

export async function setLanguage(lang) {
  const chosen = lang in LANGUAGES ? lang : "en";
  const response = await fetch(`/static/i18n/${chosen}.json`, { cache: "force-cache" });
  current = { lang: chosen, strings: await response.json() };
  document.documentElement.lang = chosen;
  document.documentElement.dir = RTL.has(chosen) ? "rtl" : "ltr";
  return chosen;
}

export function language() {
  return current.lang;
}

/** The string for `key`, with {name} placeholders filled from `values`. */
export function t(key, values = {}) {
  const text = current.strings[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : `{${name}}`));
}

/** Fill every element carrying data-i18n (text) or data-i18n-<attr> (attribute) under root. */
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("*")) {
    for (const name of el.getAttributeNames()) {
      if (name.startsWith("data-i18n-")) el.setAttribute(name.slice(10), t(el.getAttribute(name)));
    }
  }
}
