// Quick exit: the button, Escape, or Shift pressed three times within two seconds leave at
// once for a neutral site, replacing this page in history so Back does not come back here.
// No imports on purpose: loaded by its own <script>, it works before the call is up and even
// when the rest of the page failed to load or is mid-error.

const SHIFT_PRESSES = 3;
const SHIFT_WINDOW_MS = 2000;

const cleanups = new Set();
let shifts = [];

/** Run `fn` on quick exit (stop media, close the socket...). Returns an unregister function. */
export function onQuickExit(fn) {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

export function quickExit() {
  // Hide everything first: on a slow network the neutral site may take seconds to appear.
  document.documentElement.classList.add("leaving");
  if (document.body) document.body.hidden = true;
  for (const fn of cleanups) {
    try {
      fn();
    } catch {
      // Leaving matters more than a clean shutdown.
    }
  }
  try {
    sessionStorage.clear();
  } catch {
    // Storage may be disabled; there is nothing in it then.
  }
  const link = document.querySelector("[data-testid=quick-exit]");
  const url = (document.body && document.body.dataset.quickExit) || (link && link.href) || "about:blank";
  location.replace(url);
}

function onClick(event) {
  const target = event.target instanceof Element ? event.target.closest("[data-testid=quick-exit]") : null;
  if (!target) return;
  event.preventDefault();
  quickExit();
}

function onKey(event) {
  if (event.key === "Escape") {
    event.preventDefault();
    quickExit();
    return;
  }
  if (event.key !== "Shift") {
    // Capital letters while typing press Shift too: only Shift on its own, again and again, counts.
    shifts = [];
    return;
  }
  if (event.repeat) return;
  const now = performance.now();
  shifts = shifts.filter((at) => now - at < SHIFT_WINDOW_MS);
  shifts.push(now);
  if (shifts.length >= SHIFT_PRESSES) quickExit();
}

// Capture phase on window: nothing else on the page can swallow these.
window.addEventListener("click", onClick, true);
window.addEventListener("keydown", onKey, true);
