// A patient's remote studies (the mirror): "Retrieve and open" fetches one into the archive
// as a job and shows its progress; when it is local the page reloads and offers it as usual.
"use strict";
(() => {
  const POLL_MS = 1000;
  function show(card, data) {
    const status = card.querySelector(".retrieve-status");
    const button = card.querySelector("button.retrieve");
    status.classList.remove("error");
    if (data.state === "queued") status.textContent = "Waiting to retrieve…";
    else if (data.state === "running") status.textContent = `Retrieving: ${data.done} of ${data.total ?? "?"} images`;
    else if (data.state === "done") status.textContent = `Retrieved ${data.done} images; opening…`;
    else if (data.state === "failed") { status.textContent = `Retrieval failed: ${data.error}`; status.classList.add("error"); }
    if (button) button.disabled = data.state === "queued" || data.state === "running";
    card.dataset.retrieveState = data.state;
  }
  async function follow(card, url) {
    for (;;) {
      let data;
      try { data = await V.api("GET", url); } catch (e) { return; }
      show(card, data);
      if (data.state === "done") { location.href = "/studies/" + encodeURIComponent(card.dataset.study); return; }
      if (data.state === "failed") return;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
  for (const card of document.querySelectorAll("section.study.remote")) {
    const button = card.querySelector("button.retrieve");
    if (!button) continue;
    const url = button.dataset.retrieve;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try { show(card, await V.api("POST", url)); follow(card, url); }
      catch (e) { show(card, { state: "failed", error: e.message }); button.disabled = false; }
    });
    // a retrieval under way (or failed) when the page was opened
    V.api("GET", url).then((data) => { if (data.state !== "done") { show(card, data); if (data.state !== "failed") follow(card, url); } }).catch(() => {});
  }
})();
