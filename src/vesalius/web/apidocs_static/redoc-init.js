// The API reference (ReDoc), started from a file so that the page needs no inline script.
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapi, { hideDownloadButton: false }, root);
});
