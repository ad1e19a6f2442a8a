// The stack viewer's tools (Cornerstone3D tools), loaded by stack-viewer.js after the first
// image: scroll with the wheel, window/level, zoom, pan (also on the middle and right buttons)
// and a length measurement.
import {
  init, addTool, ToolGroupManager, StackScrollTool, WindowLevelTool, ZoomTool, PanTool, LengthTool,
  Enums, annotation, utilities,
} from "@cornerstonejs/tools";
import { eventTarget, triggerEvent, Enums as CoreEnums } from "@cornerstonejs/core";

const { MouseBindings } = Enums;
const PRIMARY = { wl: WindowLevelTool.toolName, pan: PanTool.toolName, zoom: ZoomTool.toolName, length: LengthTool.toolName };
const GROUP = "vesalius-stack";

export function setup(engineId, viewportId, element) {
  init();
  // The element was enabled before the tools were loaded: announce it again, so that the tools
  // put their listeners and annotation layer on it as they do for an element enabled later.
  triggerEvent(eventTarget, CoreEnums.Events.ELEMENT_ENABLED, { element, viewportId, renderingEngineId: engineId });
  for (const tool of [StackScrollTool, WindowLevelTool, ZoomTool, PanTool, LengthTool]) addTool(tool);
  const group = ToolGroupManager.createToolGroup(GROUP);
  for (const name of Object.values(PRIMARY).concat(StackScrollTool.toolName)) group.addTool(name);
  group.addViewport(viewportId, engineId);
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  utilities.stackPrefetch.enable(element);
  return {
    choose(tool) {
      for (const [key, name] of Object.entries(PRIMARY)) {
        if (key === tool) group.setToolActive(name, { bindings: [{ mouseButton: MouseBindings.Primary }] });
        else if (key === "length") group.setToolEnabled(name);  // measurements stay visible
        else group.setToolPassive(name);
      }
    },
    clear() { annotation.state.removeAllAnnotations(); },
    prefetch() { utilities.stackPrefetch.enable(element); },
  };
}
