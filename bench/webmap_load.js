// Page-load check for map.html (issue 23): node bench/webmap_load.js MAP.html, with jsdom installed
// outside the repo (npm install jsdom@24 in a scratch folder; NODE_PATH=<scratch>/node_modules).
// Time to parse map.html and create every building layer in jsdom (no real painting: the canvas is a stub).
const { JSDOM, VirtualConsole } = require("jsdom");
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const vc = new VirtualConsole(); const errors = [];
vc.on("jsdomError", e => errors.push(String(e.message)));
const t0 = Date.now();
const dom = new JSDOM(html, { runScripts: "dangerously", virtualConsole: vc, pretendToBeVisual: true,
  beforeParse(win) { win.HTMLCanvasElement.prototype.getContext = function () { return new Proxy({}, { get: (t, k) => (k in t ? t[k] : () => {}), set: (t, k, v) => { t[k] = v; return true; } }); }; } });
const t1 = Date.now();
let n = 0; dom.window.ufMap.eachLayer(l => { if (l._uf !== undefined) n++; });
const sel = dom.window.document.getElementById("uf-attr"); sel.value = "roof_material";
const t2 = Date.now(); sel.onchange({ target: sel }); const t3 = Date.now();
console.log(JSON.stringify({ file: process.argv[2], buildings: n, load_s: (t1 - t0) / 1000, recolour_s: (t3 - t2) / 1000, heap_mb: Math.round(process.memoryUsage().heapUsed / 1e6), errors: errors.slice(0, 3) }));
process.exit(0);
