// The study page: ask for the first series' metadata at once, while the stack viewer's bundle
// is still loading (scripts/portal-assets/stack-viewer.js takes the answer from here).
"use strict";
(() => {
  const url = document.currentScript.dataset.metadata;
  const answer = fetch(url, { credentials: "same-origin", headers: { Accept: "application/dicom+json" } })
    .then((r) => { if (!r.ok) throw new Error(`the series' metadata: ${r.status} ${r.statusText}`); return r.json(); });
  answer.catch(() => {});  // reported where it is used
  window.vesaliusPrefetch = { [new URL(url, location.href).toString()]: answer };
})();
