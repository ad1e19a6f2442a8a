// Bundles the stack viewer and the DICOM image loader's decoding worker (run by
// scripts/fetch-portal-assets from the folder where `npm ci` installed the packages).
//
// Some dependencies (the codecs' Emscripten glue, vtk.js's XML writer) name Node.js built-ins
// on paths a browser never takes, yet `require` them when their module loads: each built-in
// becomes an empty module here, so loading works and nothing of Node.js is bundled.
import * as esbuild from "esbuild";

const [outdir, workerEntry] = process.argv.slice(2);
const BUILTINS = ["fs", "path", "module", "url", "worker_threads", "crypto", "ws", "events",
  "stream", "util", "buffer", "os", "zlib", "http", "https", "child_process", "perf_hooks"];
const EVENTS = `class EventEmitter {
  on() { return this; } once() { return this; } off() { return this; }
  removeListener() { return this; } removeAllListeners() { return this; } emit() { return false; }
}
module.exports = EventEmitter; module.exports.EventEmitter = EventEmitter;`;
const nodeBuiltins = {
  name: "node-builtins-empty",
  setup(build) {
    const filter = new RegExp(`^(node:)?(${BUILTINS.join("|")})$`);
    build.onResolve({ filter }, (args) => ({ path: args.path, namespace: "empty" }));
    build.onLoad({ filter: /.*/, namespace: "empty" }, (args) => ({
      // "events" is extended by a class at load time (xmlbuilder2's XMLBuilderCBImpl)
      contents: args.path.endsWith("events") ? EVENTS : "module.exports = {};",
      loader: "js",
    }));
  },
};
const common = {
  bundle: true, format: "esm", minify: true, target: "es2020", logLevel: "error",
  legalComments: "none", plugins: [nodeBuiltins], define: { "process.env.NODE_ENV": '"production"' },
};
await esbuild.build({
  ...common, entryPoints: ["stack-viewer.js", "stack-tools.js"], splitting: true, outdir,
  entryNames: "[name]", chunkNames: "chunk-[hash]",
});
await esbuild.build({ ...common, entryPoints: [workerEntry], outfile: `${outdir}/decodeImageFrameWorker.js` });
