// Small DOM helpers: building elements, filling selects, formatting numbers.

export const $ = (selector, root = document) => root.querySelector(selector);

/** `h("li", {class: "x", dataset: {id: 1}}, "text", child)`: an element with attributes and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace the options of `select` with `options` ([{value, label, disabled}]), keeping `value` if offered. */
export function fillSelect(select, options, value) {
  const keep = value === undefined ? select.value : value;
  select.replaceChildren(
    ...options.map((o) => h("option", { value: o.value, disabled: o.disabled || undefined }, o.label ?? o.value)),
  );
  const offered = options.some((o) => String(o.value) === String(keep) && !o.disabled);
  if (offered) select.value = String(keep);
  else {
    const first = options.find((o) => !o.disabled);
    if (first) select.value = String(first.value);
  }
  return select.value;
}

export function formatArea(m2) {
  if (m2 === null || m2 === undefined) return "–";
  return m2 >= 10_000 ? `${(m2 / 10_000).toFixed(2)} ha` : `${Math.round(m2).toLocaleString("en")} m²`;
}

/** A confidence as a percentage; the API gives 0–1 (a value above 1 is taken as a percentage already). */
export function formatConfidence(value) {
  if (value === null || value === undefined) return "–";
  const pct = value > 1 ? value : value * 100;
  return `${Math.round(pct)} %`;
}

export function formatDateTime(text) {
  if (!text) return "";
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? String(text) : d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

/** A colour swatch for legends. */
export function swatch(color, label) {
  return h("span", { class: "swatch", style: { background: color || "transparent" }, "aria-hidden": "true", title: label });
}

/** A global, polite status line (errors stay until the next message). */
export function announce(message, kind = "info") {
  const el = $("#status");
  if (!el) return;
  el.textContent = message || "";
  el.dataset.kind = kind;
}
