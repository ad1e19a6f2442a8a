// The patient worklist: search as you type (debounced; stale answers ignored).
"use strict";
(() => {
  const form = document.getElementById("worklist-filters");
  form.addEventListener("submit", (event) => event.preventDefault()); // no inline handler: CSP
  const body = document.querySelector("#worklist tbody");
  const status = document.getElementById("worklist-status");
  let page = 1, seq = 0, timer = null, last = null;
  async function load() {
    const mine = ++seq;
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    params.set("page", page);
    const data = await V.api("GET", "/api/worklist?" + params);
    if (mine !== seq) return;
    last = data;
    body.replaceChildren(...data.patients.map((p) => V.el("tr", { "data-patient": p.patient_id, "data-source": p.source },
      V.el("td", {}, V.el("a", { href: "/patients/" + encodeURIComponent(p.patient_id) }, V.person(p.name) || "(no name)")),
      p.patient_id ? V.el("td", {}, p.patient_id) : V.el("td", { class: "muted" }, "(empty)"),
      V.el("td", {}, V.date(p.birth_date)), V.el("td", {}, p.sex || ""),
      V.el("td", { class: "num" }, p.num_studies), V.el("td", {}, V.date(p.last_study_date)),
      V.el("td", { class: "description" }, p.last_study_description || ""),
      V.el("td", {}, V.modalities(p.last_study_modalities)),
      V.el("td", { class: p.source === "local" ? "source" : "source remote" }, p.source === "local" ? "this archive" : p.source))));
    const total = data.total_is_exact ? data.total : `${data.total}+`;
    status.textContent = `${total} patient${data.total === 1 ? "" : "s"}`;
    document.getElementById("page").textContent = `page ${data.page}`;
    document.getElementById("prev").disabled = page <= 1;
    document.getElementById("next").disabled = data.patients.length < data.per_page;
    document.body.dataset.worklistLoaded = String(mine);
  }
  function reload() { page = 1; clearTimeout(timer); timer = setTimeout(() => load().catch((e) => (status.textContent = e.message)), 150); }
  form.addEventListener("input", reload);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); reload(); });
  document.getElementById("prev").addEventListener("click", () => { page = Math.max(1, page - 1); load(); });
  document.getElementById("next").addEventListener("click", () => { if (last && last.patients.length === last.per_page) { page += 1; load(); } });
  load().catch((e) => (status.textContent = e.message));
})();
