// Run Python modules under real MicroPython (WebAssembly port, npm
// @micropython/micropython-webassembly-pyscript) and exit non-zero when they fail.
//
// Why not the package's own CLI: it exits 0 even when the script raises. This runner copies
// the given files/directories (relative to --root) into MicroPython's filesystem under /lib,
// creates empty __init__.py for missing package levels, calls `<module>.main()` and exits
//   0 when main() returned 0, 1 when it returned anything else or raised (SystemExit(0) is 0),
//   2 on usage errors or when the runtime cannot be loaded.
//
// Usage: node run.mjs --root DIR --copy PATH [--copy PATH ...] --main MODULE [--heap BYTES]
import fs from "node:fs";
import path from "node:path";

function usage(msg) {
  console.error(`run.mjs: ${msg}\nusage: node run.mjs --root DIR --copy PATH... --main MODULE [--heap BYTES]`);
  process.exit(2);
}

const args = process.argv.slice(2);
let root = null, main = null, heap = 16 * 1024 * 1024;
const copies = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i], v = args[i + 1];
  if (a === "--root") { root = v; i++; }
  else if (a === "--copy") { copies.push(v); i++; }
  else if (a === "--main") { main = v; i++; }
  else if (a === "--heap") { heap = parseInt(v, 10); i++; }
  else usage(`unknown argument ${a}`);
}
if (!root || !main || copies.length === 0) usage("--root, --copy and --main are required");
if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(main)) usage(`--main ${main}: not a module name`);

let loadMicroPython;
try {
  ({ loadMicroPython } = await import("@micropython/micropython-webassembly-pyscript"));
} catch (e) {
  console.error(`run.mjs: cannot load the MicroPython runtime (${e.message}); run \`npm install\` in tools/micropython (scripts/setup.sh does)`);
  process.exit(2);
}

const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
const FS = mp.FS;

function mkdirs(dir) {
  let cur = "";
  for (const part of dir.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}
const written = new Set();
function put(rel) {
  const src = path.join(root, rel);
  const st = fs.statSync(src);
  if (st.isDirectory()) {
    for (const name of fs.readdirSync(src).sort()) {
      const sub = path.posix.join(rel, name);
      if (name.endsWith(".py") || fs.statSync(path.join(root, sub)).isDirectory()) put(sub);
    }
    return;
  }
  if (!rel.endsWith(".py")) return;
  const dest = "/lib/" + rel;
  mkdirs(path.posix.dirname(dest));
  FS.writeFile(dest, fs.readFileSync(src));
  written.add(dest);
}
for (const c of copies) put(c);
// Make every directory a package (MicroPython needs __init__.py for nested imports here).
for (const f of [...written]) {
  let d = path.posix.dirname(f);
  while (d !== "/lib" && d !== "/") {
    const init = d + "/__init__.py";
    if (!written.has(init)) { FS.writeFile(init, ""); written.add(init); }
    d = path.posix.dirname(d);
  }
}

let code = 1;
try {
  mp.runPython(`import sys\nif '/lib' not in sys.path: sys.path.append('/lib')\nimport ${main}\n_rc = ${main}.main()`);
  const rc = mp.globals.get("_rc");
  code = rc === 0 ? 0 : 1;
  if (code) console.error(`run.mjs: ${main}.main() returned ${rc}`);
} catch (e) {
  if (e.name !== "PythonError") throw e;
  if (e.type === "SystemExit") {
    const last = e.message.trim().split("\n").pop().trim();
    code = ["", "SystemExit", "SystemExit:", "SystemExit: 0", "SystemExit: None"].includes(last) ? 0 : 1;
    if (code) console.error(`run.mjs: SystemExit ${e.message.trim()}`);
  } else {
    console.error(e.message);
    code = 1;
  }
}
process.exit(code);
