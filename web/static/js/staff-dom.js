// Small DOM helpers for the staff pages. Elements are found by data-testid because that is the
// page's stable contract (the browser tests use the same names), not by layout-bound classes.

export function byTestId(root, id) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** Build an element: el("li", {class: "msg", dataset: {fromRole: "victim"}}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function show(node, visible) {
  if (node) node.hidden = !visible;
}

/** Set an element's text and data-state together (tests and CSS read data-state). */
export function setState(node, state, text) {
  if (!node) return;
  node.dataset.state = state;
  if (text !== undefined) node.textContent = text;
}

/** Local clock time "14:03:07" for a Unix time in seconds. */
export function clock(seconds) {
  const when = new Date(seconds * 1000);
  return when.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** "0:07", "12:34", "1:02:03" for a duration in seconds. */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}
