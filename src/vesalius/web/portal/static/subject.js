// The subject timeline from the research records API.
"use strict";
(() => {
  const root = document.getElementById("subject");
  const id = root.dataset.subject;
  const base = "/api/subjects/" + encodeURIComponent(id);
  const list = document.getElementById("timeline");
  const summary = document.getElementById("subject-summary");
  function event(e) {
    const parts = [V.el("time", {}, e.date), " ", V.el("strong", {}, e.title || e.kind.replaceAll("_", " "))];
    const body = V.el("div", { class: "event-body" });
    if (e.note) body.append(V.el("p", {}, e.note.text));
    else if (e.description) body.append(V.el("p", {}, e.description));
    if (e.diagnosis) body.append(V.el("p", {}, JSON.stringify(e.diagnosis)));
    if (e.file) body.append(V.el("a", { href: `${base}/events/${e.id}/file` }, `${e.file.filename} (${e.file.size} bytes)`));
    if (e.model) body.append(V.el("span", {}, `Heart model ${e.model.name || ""}`));
    for (const link of e.links || []) {
      body.append(link.present
        ? V.el("a", { class: "button open-viewer", href: root.dataset.viewer + encodeURIComponent(link.study_instance_uid) }, "Open study")
        : V.el("span", { class: "muted" }, `study ${link.study_instance_uid} not in the archive`));
    }
    return V.el("li", { class: "event kind-" + e.kind }, ...parts, body);
  }
  async function load() {
    try {
      const [subject, events] = await Promise.all([V.api("GET", base), V.api("GET", base + "/timeline")]);
      summary.textContent = [subject.sex, subject.birth_date, subject.cohort, `${subject.event_count} events`, `${subject.study_count} studies`].filter(Boolean).join(" · ");
      list.replaceChildren(...events.map(event));
    } catch (e) { summary.textContent = e.message; }
  }
  const status = document.getElementById("form-status");
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
