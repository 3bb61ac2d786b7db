// DOM building without innerHTML: every value becomes a text node, so no data can inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function byId(id) {
  return document.getElementById(id);
}

// Re-rendering must not take the keyboard focus away: when it was on a link inside `root`,
// it moves to the link with the same address in the new content.
export function keepFocus(root, render) {
  const active = document.activeElement;
  const href = active && root.contains(active) ? active.getAttribute("href") : null;
  render();
  if (href) root.querySelector(`a[href="${CSS.escape(href)}"]`)?.focus();
}
