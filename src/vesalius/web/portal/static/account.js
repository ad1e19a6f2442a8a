// One's own password and API tokens.
"use strict";
(() => {
  const pw = document.getElementById("password-form");
  pw.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(pw);
    const out = document.getElementById("password-status");
    try { await V.api("POST", "/api/me/password", { current: f.get("current"), new: f.get("new") }); out.textContent = "Password changed; log in again."; setTimeout(() => (location.href = "/login"), 1500); }
    catch (e) { out.textContent = e.message; }
  });
  const body = document.querySelector("#tokens tbody");
  async function load() {
    const tokens = await V.api("GET", "/api/me/tokens");
    body.replaceChildren(...tokens.map((t) => V.el("tr", {},
      V.el("td", {}, t.name), V.el("td", {}, V.el("code", {}, t.prefix + "…")), V.el("td", {}, V.when(t.created_at)), V.el("td", {}, V.when(t.last_used_at) || "never"),
      V.el("td", {}, t.revoked_at ? "revoked" : V.el("button", { type: "button", onclick: async () => { await V.api("DELETE", "/api/me/tokens/" + t.id); load(); } }, "Revoke")))));
  }
  const form = document.getElementById("token-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const created = await V.api("POST", "/api/me/tokens", { name: new FormData(form).get("name") });
    const shown = document.getElementById("new-token");
    shown.hidden = false;
    shown.replaceChildren("Copy it now, it is shown only once: ", V.el("code", {}, created.token));
    form.reset(); load();
  });
  load();
})();
