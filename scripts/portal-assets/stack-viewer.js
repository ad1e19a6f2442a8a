// The portal's light stack viewer: one series of a study, drawn by Cornerstone3D.
//
// Bundled by scripts/fetch-portal-assets (esbuild) into web/portal/static/vendor/. The page
// (templates/study.html) gives the study, its series and the DICOMweb root as data
// attributes. The series' metadata comes in one WADO-RS request (stored JSON, no file is
// opened), then frames are fetched one by one as they are shown: the first image needs one
// metadata request and one frame. Scroll (wheel or arrow keys), window/level, zoom, pan and a
// length measurement; OHIF stays one click away for full reading. The tools (a large part of
// the code) are a separate chunk, loaded once the first image is on the screen.
import { RenderingEngine, Enums, init as coreInit, eventTarget, utilities } from "@cornerstonejs/core";
import { init as loaderInit, wadors } from "@cornerstonejs/dicom-image-loader";

const root = document.getElementById("stack-viewer");
const element = document.getElementById("stack-viewport");
const info = document.getElementById("stack-info");
const status = document.getElementById("stack-status");
const ENGINE = "vesalius", VIEWPORT = "stack";

const first = (item, tag) => (item[tag] && item[tag].Value ? item[tag].Value[0] : undefined);

function sortInstances(instances) {
  // Along the slice normal where positions are known, else by instance number.
  const position = (i) => (i["00200032"] && i["00200032"].Value) || null;
  const orientation = instances.length && instances[0]["00200037"] && instances[0]["00200037"].Value;
  if (orientation && instances.every(position)) {
    const [a, b, c, d, e, f] = orientation.map(Number);
    const normal = [b * f - c * e, c * d - a * f, a * e - b * d];
    const along = (i) => position(i).reduce((sum, v, k) => sum + Number(v) * normal[k], 0);
    return instances.slice().sort((x, y) => along(x) - along(y));
  }
  return instances.slice().sort((x, y) => (first(x, "00200013") || 0) - (first(y, "00200013") || 0));
}

let engine = null, viewport = null, tools = null, started = false;

performance.mark("stack:module");

async function start() {
  await coreInit();
  performance.mark("stack:core");
  const vendor = new URL(".", import.meta.url).toString();
  loaderInit({ maxWebWorkers: 2, wasmBasePath: vendor, decodeConfig: { wasmBasePath: vendor } });
  engine = new RenderingEngine(ENGINE);
  engine.enableElement({ viewportId: VIEWPORT, type: Enums.ViewportType.STACK, element, defaultOptions: { background: [0, 0, 0] } });
  viewport = engine.getViewport(VIEWPORT);
  element.addEventListener(Enums.Events.STACK_NEW_IMAGE, showInfo);
  element.addEventListener(Enums.Events.VOI_MODIFIED, showInfo);
  element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
    if (!viewport.getImageData()) return;  // an empty render, before the image arrived
    if (!root.dataset.firstImage) {
      root.dataset.firstImage = String(Math.round(performance.now()));
      if (!root.dataset.firstPaint) root.dataset.firstPaint = root.dataset.firstImage;
      const preview = document.getElementById("stack-preview");
      if (preview) preview.hidden = true;
      status.textContent = "";
      // thumbnails only now: their rendering must not delay the first image
      for (const img of root.querySelectorAll("img[data-src]")) {
        img.addEventListener("error", () => (img.style.visibility = "hidden"));  // no broken icon
        img.src = img.dataset.src;
      }
      loadTools();
    }
    root.dataset.rendered = String(viewport.getCurrentImageIdIndex());
  });
  eventTarget.addEventListener(Enums.Events.IMAGE_LOAD_ERROR, (ev) => {
    const error = ev.detail && ev.detail.error;
    const reason = (error && (error.message || (error.response && error.response.statusText))) || "unreadable";
    status.textContent = `An image could not be shown (${reason}); the others can be: scroll on.`;
    const preview = document.getElementById("stack-preview");
    if (preview) preview.hidden = true;
    loadTools();  // the first image failed: the tools must not wait for it
  });
  new ResizeObserver(() => engine && engine.resize(true, true)).observe(element);
  started = true;
}

let toolsLoading = false;
function loadTools() {
  if (toolsLoading) return;
  toolsLoading = true;
  import("./stack-tools.js")
    .then((module) => {
      tools = module.setup(ENGINE, VIEWPORT, element);
      choose("wl");
      root.dataset.tools = "ready";
    })
    .catch((e) => (status.textContent = "The viewer's tools could not be loaded: " + e.message));
}

function choose(tool) {
  if (!tools) return;
  tools.choose(tool);
  for (const button of root.querySelectorAll("[data-tool]")) button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
}

function showInfo() {
  if (!viewport) return;
  const index = viewport.getCurrentImageIdIndex(), count = viewport.getImageIds().length;
  const { voiRange } = viewport.getProperties();
  let wl = "";
  if (voiRange) {  // as the DICOM window: width and centre
    const { windowWidth, windowCenter } = utilities.windowLevel.toWindowLevel(voiRange.lower, voiRange.upper);
    wl = ` · W ${Math.round(windowWidth)} L ${Math.round(windowCenter)}`;
  }
  info.textContent = `Image ${index + 1} / ${count}${wl}`;
}

async function openSeries(seriesUid) {
  const study = root.dataset.study;
  const dicomweb = new URL(root.dataset.dicomweb, location.href).toString().replace(/\/$/, "");
  status.textContent = "";
  for (const button of root.querySelectorAll("[data-series]")) button.setAttribute("aria-current", String(button.dataset.series === seriesUid));
  const preview = document.getElementById("stack-preview");
  if (preview && seriesUid !== root.dataset.initialSeries) preview.hidden = true;
  const seriesUrl = `${dicomweb}/studies/${study}/series/${seriesUid}`;
  const prefetched = (window.vesaliusPrefetch || {})[seriesUrl + "/metadata"];  // static/study.js
  const [metadata] = await Promise.all([
    prefetched || fetch(seriesUrl + "/metadata", { credentials: "same-origin", headers: { Accept: "application/dicom+json" } })
      .then((r) => { if (!r.ok) throw new Error(`the series' metadata: ${r.status} ${r.statusText}`); return r.json(); }),
    started ? null : start(),
  ]);
  performance.mark("stack:metadata");
  const images = sortInstances(metadata.filter((i) => i["7FE00010"] || first(i, "00280010")));
  if (!images.length) { status.textContent = "This series has no images to show."; return; }
  const imageIds = [];
  for (const instance of images) {
    const frames = Number(first(instance, "00280008") || 1);
    for (let frame = 1; frame <= frames; frame++) {
      const imageId = `wadors:${seriesUrl}/instances/${first(instance, "00080018")}/frames/${frame}`;
      wadors.metaDataManager.add(imageId, instance);
      imageIds.push(imageId);
    }
  }
  if (tools) tools.clear();
  // the image the page showed first (the server's preview), else the middle one
  const wanted = seriesUid === root.dataset.initialSeries ? root.dataset.initialInstance : "";
  const at = wanted ? imageIds.findIndex((id) => id.includes(`/instances/${wanted}/`)) : -1;
  const startAt = at >= 0 ? at : Math.floor(imageIds.length / 2);
  performance.mark("stack:setStack");
  try {
    await viewport.setStack(imageIds, startAt);
  } catch (error) {
    loadTools();  // scrolling on to the other images needs them
    throw new Error(`An image could not be shown (${(error && error.message) || "unreadable"}); the others can be: scroll on.`);
  }
  performance.mark("stack:loaded");
  viewport.render();
  if (tools) tools.prefetch();
  showInfo();
}

// Cornerstone's loader leaves the rejection of an undecodable frame unhandled (besides the
// IMAGE_LOAD_ERROR event above): say it on the page, as a warning in the console.
window.addEventListener("unhandledrejection", (event) => {
  const reason = (event.reason && (event.reason.message || String(event.reason))) || "unreadable";
  console.warn("stack viewer:", reason);
  status.textContent = `An image could not be shown (${reason}); the others can be: scroll on.`;
  event.preventDefault();
});

root.addEventListener("click", (event) => {
  const tool = event.target.closest("[data-tool]");
  if (tool) choose(tool.dataset.tool);
  const series = event.target.closest("[data-series]");
  if (series) openSeries(series.dataset.series).catch((e) => (status.textContent = e.message));
  if (event.target.closest("#stack-reset") && viewport) { viewport.resetCamera(); viewport.resetProperties(); viewport.render(); showInfo(); }
});
element.addEventListener("keydown", (event) => {
  if (!viewport || !["ArrowUp", "ArrowDown", "PageUp", "PageDown"].includes(event.key)) return;
  event.preventDefault();
  const step = event.key === "ArrowUp" || event.key === "PageUp" ? -1 : 1;
  const next = Math.min(Math.max(viewport.getCurrentImageIdIndex() + step, 0), viewport.getImageIds().length - 1);
  viewport.setImageIdIndex(next);
});
element.addEventListener("contextmenu", (event) => event.preventDefault());

const initial = root.dataset.initialSeries;
if (initial) openSeries(initial).catch((e) => (status.textContent = e.message));
