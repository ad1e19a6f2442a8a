// Audit trail search: fixed columns, long values cut with the full text on hover.
"use strict";
(() => {
  const form = document.getElementById("audit-filters");
  const body = document.querySelector("#audit tbody");
  const status = document.getElementById("audit-status");
  const PAGE = 100;
  let offset = 0;
  // "Mozilla/5.0 (X11; Linux x86_64) ... Chrome/120.0.0.0 Safari/537.36" -> "Chrome 120 · Linux"
  function agent(ua) {
    if (!ua) return "";
    const browsers = [["Edg/", "Edge"], ["OPR/", "Opera"], ["Firefox/", "Firefox"], ["HeadlessChrome/", "Headless Chrome"], ["Chromium/", "Chromium"], ["Chrome/", "Chrome"], ["Version/", "Safari"]];
    const systems = [["Windows", "Windows"], ["Android", "Android"], ["iPhone", "iOS"], ["Mac OS", "macOS"], ["Linux", "Linux"]];
    for (const [mark, name] of browsers) {
      const at = ua.indexOf(mark);
      if (at >= 0) {
        const version = ua.slice(at + mark.length).split(/[.\s]/)[0];
        const system = systems.find(([m]) => ua.includes(m));
        return `${name} ${version}` + (system ? ` · ${system[1]}` : "");
      }
    }
    return ua.split(/[\s(]/)[0];  // a tool: "storescu/3.6.7", "python-httpx/0.27"
  }
  const cell = (text, full, cls) => V.el("td", Object.assign({ title: full || text || "" }, cls ? { class: cls } : {}), text || "");
  function row(r) {
    const ok = r.outcome === "ok";
    return V.el("tr", {},
      cell(V.when(r.at)), cell(r.actor), cell(r.action), cell(r.protocol), cell(r.object || ""),
      cell(ok ? "ok" : r.outcome, r.detail || r.outcome, ok ? "outcome ok" : "outcome failed"),
      cell(r.address || ""), cell(agent(r.user_agent), r.user_agent));
  }
  async function load(append) {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    params.set("offset", offset); params.set("limit", PAGE);
    try {
      const rows = await V.api("GET", "/api/audit?" + params);
      const trs = rows.map(row);
      if (append) body.append(...trs); else body.replaceChildren(...trs);
      status.textContent = `${body.children.length}${rows.length === PAGE ? "+" : ""} event${body.children.length === 1 ? "" : "s"}`;
      document.getElementById("more").disabled = rows.length < PAGE;
      document.body.dataset.auditLoaded = String(Date.now());
    } catch (e) { status.textContent = e.message; }
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; load(false); });
  document.getElementById("more").addEventListener("click", () => { offset += PAGE; load(true); });
  load(false);
})();
