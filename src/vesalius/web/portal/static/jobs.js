// The job queue: retry a dead job, cancel a waiting one.
"use strict";
(() => {
  const status = document.getElementById("job-status");
  const report = (p) => p.then(() => location.reload()).catch((e) => (status.textContent = e.message));
  document.querySelectorAll("#jobs tr[data-job]").forEach((row) => {
    const url = "/api/jobs/" + encodeURIComponent(row.dataset.job);
    row.querySelector(".retry")?.addEventListener("click", () => report(V.api("POST", url + "/retry")));
    row.querySelector(".cancel")?.addEventListener("click", () => report(V.api("POST", url + "/cancel")));
  });
})();
