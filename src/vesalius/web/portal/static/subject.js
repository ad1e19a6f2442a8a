// The subject timeline from the research records API: events, their parts, edits, a chart.
"use strict";
(() => {
  const root = document.getElementById("subject");
  const id = root.dataset.subject;
  const canWrite = root.dataset.canWrite === "1";
  const canDelete = root.dataset.canDelete === "1";
  const base = "/api/subjects/" + encodeURIComponent(id);
  const list = document.getElementById("timeline");
  const summary = document.getElementById("subject-summary");
  const status = document.getElementById("timeline-status");

  // The typed measures of a baseline diagnosis (records/schemas.py DiagnosisIn), with units.
  const MEASURES = [
    ["height_cm", "Height", "cm"], ["weight_kg", "Weight", "kg"], ["heart_rate_bpm", "Heart rate", "bpm"],
    ["systolic_bp_mmhg", "Systolic blood pressure", "mmHg"], ["diastolic_bp_mmhg", "Diastolic blood pressure", "mmHg"],
  ];
  // Units read from the end of a site's own measure names: "lvef_pct" is "LVEF" in %.
  const SUFFIXES = [["_mmhg", "mmHg"], ["_bpm", "bpm"], ["_pct", "%"], ["_percent", "%"], ["_ml_m2", "mL/m²"], ["_ml", "mL"],
    ["_ms", "ms"], ["_mm", "mm"], ["_cm", "cm"], ["_m2", "m²"], ["_kg", "kg"], ["_g", "g"], ["_years", "years"], ["_l", "L"]];
  function measureOf(key) {
    const known = MEASURES.find(([k]) => k === key);
    if (known) return { label: known[1], unit: known[2] };
    const lower = key.toLowerCase();
    const suffix = SUFFIXES.find(([s]) => lower.endsWith(s));
    const stem = suffix ? key.slice(0, key.length - suffix[0].length) : key;
    const words = stem.replaceAll("_", " ").trim();
    const label = words.length <= 4 ? words.toUpperCase() : words[0].toUpperCase() + words.slice(1);
    return { label, unit: suffix ? suffix[1] : "" };
  }
  function measures(diagnosis) {
    const out = [];
    for (const [key] of MEASURES) if (diagnosis[key] !== null && diagnosis[key] !== undefined) out.push([key, diagnosis[key]]);
    for (const [key, value] of Object.entries(diagnosis.extra || {})) out.push([key, value]);
    return out;
  }
  function valueText(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "object") return Array.isArray(value) ? value.join(", ") : Object.entries(value).map(([k, v]) => `${k}: ${v}`).join("; ");
    return String(value);
  }
  function diagnosisTable(diagnosis) {
    const rows = measures(diagnosis).map(([key, value]) => {
      const m = measureOf(key);
      return V.el("tr", { "data-measure": key }, V.el("th", { scope: "row" }, m.label), V.el("td", { class: "num" }, valueText(value)), V.el("td", { class: "unit" }, m.unit));
    });
    const parts = [];
    if (diagnosis.diagnosis) parts.push(V.el("p", { class: "diagnosis-text" }, V.el("strong", {}, "Diagnosis: "), diagnosis.diagnosis));
    if (rows.length) parts.push(V.el("table", { class: "measures" },
      V.el("thead", {}, V.el("tr", {}, V.el("th", {}, "Measure"), V.el("th", { class: "num" }, "Value"), V.el("th", {}, "Unit"))),
      V.el("tbody", {}, ...rows)));
    return parts;
  }
  function modelPart(e) {
    const m = e.model;
    const url = `${base}/events/${e.id}/model`;
    const facts = [m.name, m.version && `version ${m.version}`, m.frames && `${m.frames} frames`].filter(Boolean).join(" · ");
    const xml = V.el("pre", { class: "xml" }, "Loading…");
    const details = V.el("details", { class: "model-xml" }, V.el("summary", {}, "Metadata (XML)"), xml);
    details.addEventListener("toggle", async () => {
      if (!details.open || details.dataset.loaded) return;
      try {
        const response = await fetch(url + "/metadata", { credentials: "same-origin" });
        if (!response.ok) throw new Error(response.statusText);
        xml.textContent = await response.text();
        details.dataset.loaded = "1";
      } catch (err) { xml.textContent = "Could not load the XML: " + err.message; }
    });
    const fields = Object.entries(m.fields || {}).map(([k, v]) => V.el("tr", {}, V.el("th", { scope: "row" }, k), V.el("td", {}, valueText(v))));
    return [
      V.el("p", {}, V.el("strong", {}, "Heart model "), facts),
      V.el("p", { class: "actions" },
        V.el("a", { class: "button model-data", href: url + "/data", download: m.data.filename }, `Download model (${m.data.filename}, ${size(m.data.size)})`),
        V.el("a", { class: "button secondary model-metadata", href: url + "/metadata", download: m.metadata.filename }, `Download XML (${m.metadata.filename})`)),
      fields.length ? V.el("table", { class: "measures model-fields" }, V.el("tbody", {}, ...fields)) : null,
      details,
    ];
  }
  function size(bytes) {
    return bytes < 1024 ? `${bytes} B` : bytes < 1048576 ? `${(bytes / 1024).toFixed(1)} KB` : `${(bytes / 1048576).toFixed(1)} MB`;
  }
  function editForm(e, item) {
    const form = V.el("form", { class: "event-edit card" },
      V.el("label", {}, "Date ", V.el("input", { type: "date", name: "date", value: e.date, required: "" })),
      V.el("label", {}, "Title ", V.el("input", { name: "title", value: e.title || "", maxlength: "256" })),
      e.note ? V.el("label", {}, "Note ", V.el("textarea", { name: "note", rows: "4" }, e.note.text))
        : V.el("label", {}, "Description ", V.el("textarea", { name: "description", rows: "3" }, e.description || "")),
      V.el("p", { class: "actions" }, V.el("button", { type: "submit" }, "Save"), V.el("button", { type: "button", class: "secondary cancel" }, "Cancel")));
    form.querySelector(".cancel").addEventListener("click", () => form.remove());
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const patch = { date: f.get("date"), title: f.get("title") || null };
      if (e.note) patch.note = { ...e.note, text: f.get("note") || "-" };
      else patch.description = f.get("description") || null;
      try { await V.api("PATCH", `${base}/events/${e.id}`, patch); status.textContent = "Event saved."; load(); }
      catch (err) { status.textContent = err.message; }
    });
    item.append(form);
    form.querySelector("input").focus();
  }
  function event(e) {
    const label = e.title || e.kind.replaceAll("_", " ");
    const head = V.el("div", { class: "event-head" }, V.el("time", { datetime: e.date }, e.date), " ", V.el("strong", {}, label),
      e.session_number !== null && e.session_number !== undefined ? V.el("span", { class: "muted" }, ` · session ${e.session_number}`) : null,
      V.el("span", { class: "kind" }, e.kind.replaceAll("_", " ")));
    const body = V.el("div", { class: "event-body" });
    if (e.note) body.append(V.el("p", { class: "note-text" }, e.note.text));
    if (e.description) body.append(V.el("p", {}, e.description));
    if (e.diagnosis) body.append(...diagnosisTable(e.diagnosis));
    if (e.file) body.append(V.el("a", { href: `${base}/events/${e.id}/file`, download: e.file.filename }, `${e.file.filename} (${size(e.file.size)})`));
    if (e.model) body.append(...modelPart(e).filter(Boolean));
    for (const link of e.links || []) {
      body.append(link.present
        ? V.el("a", { class: "button open-study", href: "/studies/" + encodeURIComponent(link.study_instance_uid) }, "Open study")
        : V.el("span", { class: "muted" }, `study ${link.study_instance_uid} not in the archive`));
    }
    const item = V.el("li", { class: "event kind-" + e.kind, "data-event": String(e.id) }, head, body);
    if (canWrite || canDelete) {
      const tools = V.el("div", { class: "event-tools" });
      if (canWrite) tools.append(V.el("button", { type: "button", class: "secondary edit", onclick: () => item.querySelector(".event-edit") || editForm(e, item) }, "Edit"));
      if (canDelete) tools.append(V.el("button", { type: "button", class: "danger delete-event", onclick: async () => {
        if (!confirm(`Delete the event "${label}" of ${e.date}? This cannot be undone.`)) return;
        try { await V.api("DELETE", `${base}/events/${e.id}`); status.textContent = "Event deleted."; load(); }
        catch (err) { status.textContent = err.message; }
      } }, "Delete"));
      head.append(tools);
    }
    return item;
  }

  // Repeated measurements (baseline diagnoses over sessions) as a small line chart.
  let chart = null;
  function drawChart(events) {
    const section = document.getElementById("measures-chart");
    const diagnoses = events.filter((e) => e.diagnosis).sort((a, b) => a.date.localeCompare(b.date));
    const series = new Map();
    diagnoses.forEach((e, i) => {
      for (const [key, value] of measures(e.diagnosis)) {
        if (typeof value !== "number") continue;
        if (!series.has(key)) series.set(key, new Array(diagnoses.length).fill(null));
        series.get(key)[i] = value;
      }
    });
    const repeated = [...series].filter(([, values]) => values.filter((v) => v !== null).length >= 2);
    section.hidden = diagnoses.length < 2 || repeated.length === 0;
    if (section.hidden) return;
    if (typeof Chart === "undefined") {
      section.querySelector(".chart-missing").hidden = false;
      return;
    }
    const labels = diagnoses.map((e) => e.date + (e.session_number !== null && e.session_number !== undefined ? ` (session ${e.session_number})` : ""));
    const palette = ["#1f5fa8", "#b42318", "#067647", "#b54708", "#6941c6", "#0e7090", "#c11574"];
    const datasets = repeated.map(([key, values], i) => {
      const m = measureOf(key);
      return { label: m.unit ? `${m.label} (${m.unit})` : m.label, data: values, borderColor: palette[i % palette.length], backgroundColor: palette[i % palette.length], spanGaps: true, tension: 0.1 };
    });
    if (chart) chart.destroy();
    chart = new Chart(document.getElementById("measures-canvas"), {
      type: "line",
      data: { labels, datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false, interaction: { mode: "index", intersect: false }, plugins: { legend: { position: "bottom" } } },
    });
    section.dataset.drawn = String(datasets.length);
  }

  async function load() {
    try {
      const [subject, events] = await Promise.all([V.api("GET", base), V.api("GET", base + "/timeline")]);
      summary.textContent = [subject.sex, subject.birth_date, subject.cohort, `${subject.event_count} events`, `${subject.study_count} studies`].filter(Boolean).join(" · ");
      list.replaceChildren(...events.map(event));
      drawChart(events);
      document.body.dataset.timelineLoaded = String(Date.now());
    } catch (e) { summary.textContent = e.message; }
  }
  const note = document.getElementById("note-form");
  if (note) note.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(note);
    try {
      await V.api("POST", base + "/events", { kind: "clinical_note", date: f.get("event_date"), title: f.get("title") || null, note: { text: f.get("description") || "-" } });
      note.reset(); status.textContent = "Note added."; load();
    } catch (e) { status.textContent = e.message; }
  });
  const file = document.getElementById("file-form");
  if (file) file.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(file);
    const body = new FormData();
    body.set("file", f.get("file")); body.set("date", f.get("event_date"));
    if (f.get("title")) body.set("title", f.get("title"));
    try { await V.api("POST", base + "/files", body); file.reset(); status.textContent = "File uploaded."; load(); }
    catch (e) { status.textContent = e.message; }
  });
  load();
})();
