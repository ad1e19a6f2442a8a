// The central index's search: studies across sites, each naming the site that holds it.
"use strict";
(() => {
  const form = document.getElementById("federation-filters");
  if (!form) return;
  const body = document.querySelector("#federation tbody");
  const total = document.getElementById("federation-total");
  const error = document.getElementById("federation-error");
  const limit = 50;
  let offset = 0;
  async function load() {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    params.set("offset", offset); params.set("limit", limit);
    error.hidden = true;
    let page;
    try { page = await V.api("GET", "/api/federation/studies?" + params); }
    catch (e) { error.textContent = e.message; error.hidden = false; return; }
    body.replaceChildren(...page.studies.map((s) => V.el("tr", { "data-site": s.site },
      V.el("td", { class: "site" }, s.site), V.el("td", {}, s.patient_id || ""), V.el("td", {}, V.person(s.patient_name)),
      V.el("td", {}, (s.study_datetime || "").replace("T", " ")), V.el("td", {}, s.study_description || ""),
      V.el("td", {}, V.modalities(s.study_modality)), V.el("td", {}, s.study_series ?? ""), V.el("td", {}, s.study_instances ?? ""),
      V.el("td", { class: "uid" }, s.study_iuid))));
    const last = Math.min(offset + limit, page.total);
    total.textContent = page.total ? `${offset + 1}–${last} of ${page.total} studies` : "No study found.";
    document.getElementById("previous").disabled = offset === 0;
    document.getElementById("next").disabled = last >= page.total;
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; load(); });
  document.getElementById("previous").addEventListener("click", () => { offset = Math.max(0, offset - limit); load(); });
  document.getElementById("next").addEventListener("click", () => { offset += limit; load(); });
  load();
})();
