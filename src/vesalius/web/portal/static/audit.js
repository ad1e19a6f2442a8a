// Audit trail search.
"use strict";
(() => {
  const form = document.getElementById("audit-filters");
  const body = document.querySelector("#audit tbody");
  let offset = 0;
  async function load(append) {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    params.set("offset", offset); params.set("limit", 100);
    const rows = await V.api("GET", "/api/audit?" + params);
    const trs = rows.map((r) => V.el("tr", {}, ...[r.at, r.actor, r.action, r.protocol, r.object || "", r.outcome, r.address || "", r.user_agent || ""].map((v) => V.el("td", {}, v))));
    if (append) body.append(...trs); else body.replaceChildren(...trs);
    document.getElementById("more").disabled = rows.length < 100;
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; load(false); });
  document.getElementById("more").addEventListener("click", () => { offset += 100; load(true); });
  load(false);
})();
