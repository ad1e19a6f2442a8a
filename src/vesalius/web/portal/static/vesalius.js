// Shared helpers: JSON calls with the CSRF token, and safe text building.
"use strict";
const V = {
  csrf: () => document.querySelector('meta[name="csrf-token"]').content,
  async api(method, url, body) {
    const init = { method, headers: { "X-CSRF-Token": V.csrf(), Accept: "application/json" }, credentials: "same-origin" };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
    const response = await fetch(url, init);
    if (response.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("logged out"); }
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw new Error((data && (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail))) || response.statusText);
    return data;
  },
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  },
  // One format everywhere (the same as the server's, web/portal/display.py): ISO 8601 dates,
  // moments in UTC without fractions of a second, names as "Family, Given Middle".
  date: (d) => (d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d || ""),
  when(value) {
    if (!value) return "";
    const text = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : value + "Z";
    const moment = new Date(text);
    if (isNaN(moment)) return value;
    return moment.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  },
  person(n) {
    const [family = "", given = "", middle = "", prefix = "", suffix = ""] = (n || "").split("=")[0].split("^").map((p) => p.trim());
    return [family, [given, middle].filter(Boolean).join(" "), prefix, suffix].filter(Boolean).join(", ");
  },
  modalities: (m) => (m || "").split("\\").filter(Boolean).join(", "),
};
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-delete]");
  if (!button) return;
  if (!confirm("Delete it for good? This cannot be undone.")) return;
  try { await V.api("DELETE", button.dataset.delete); button.closest("section").remove(); }
  catch (e) { alert(e.message); }
});
