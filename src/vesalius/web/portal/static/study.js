// The study page, run right after the preview image: ask for the first series' metadata at
// once, while the stack viewer's bundle is still loading (scripts/portal-assets/stack-viewer.js
// takes the answer from here). Until the viewer draws, the server's rendering of the same image
// is shown (#stack-preview); data-first-paint says when the first image was on the screen.
"use strict";
(() => {
  const url = document.currentScript.dataset.metadata;
  const answer = fetch(url, { credentials: "same-origin", headers: { Accept: "application/dicom+json" } })
    .then((r) => { if (!r.ok) throw new Error(`the series' metadata: ${r.status} ${r.statusText}`); return r.json(); });
  answer.catch(() => {});  // reported where it is used
  window.vesaliusPrefetch = { [new URL(url, location.href).toString()]: answer };
  const viewer = document.getElementById("stack-viewer");
  const preview = document.getElementById("stack-preview");
  const stamp = () => { if (!viewer.dataset.firstPaint) viewer.dataset.firstPaint = String(Math.round(performance.now())); };
  // loaded, then drawn: the second animation frame after the load comes after a frame with it
  const painted = () => requestAnimationFrame(() => requestAnimationFrame(stamp));
  if (preview) {
    // it may have loaded, or failed, while this script was on its way
    if (preview.complete) { if (preview.naturalWidth) painted(); else preview.hidden = true; }
    preview.addEventListener("load", painted);
    preview.addEventListener("error", () => (preview.hidden = true));  // the viewer says why
  }
})();
