// Administration of accounts.
"use strict";
(() => {
  const status = document.getElementById("user-status");
  const report = (p) => p.then(() => location.reload()).catch((e) => (status.textContent = e.message));
  document.querySelectorAll("#users tr[data-user]").forEach((row) => {
    const url = "/api/users/" + encodeURIComponent(row.dataset.user);
    row.querySelector(".role").addEventListener("change", (ev) => report(V.api("PATCH", url, { role: ev.target.value })));
    row.querySelector(".toggle").addEventListener("click", (ev) => report(V.api("PATCH", url, { active: ev.target.dataset.active !== "1" })));
    row.querySelector(".reset").addEventListener("click", () => {
      const password = prompt(`New password for ${row.dataset.user}`);
      if (password) report(V.api("PATCH", url, { password }));
    });
  });
  const form = document.getElementById("user-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = Object.fromEntries(new FormData(form));
    if (!f.full_name) delete f.full_name;
    report(V.api("POST", "/api/users", f));
  });
})();
