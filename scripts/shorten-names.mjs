// Gives the wasm module's imports and exports one- or two-letter names, in
// the module and in the wasm-bindgen glue that uses them:
//   node scripts/shorten-names.mjs module.wasm glue.js
//
// wasm-bindgen names every import after its Rust item plus a 16-digit hash
// (`__wbg_new_with_str_and_init_d9f6b5611184e16b`), once in the module and
// once in the glue; those names weigh kilobytes even after gzip. The glue is
// the only user of the names, so renaming both sides changes nothing else.
// Every rename is checked: a name must appear in the glue exactly where this
// script expects it, or the script fails and the build stops. It also drops
// the export of `initSync`, which the package does not use.
import { readFileSync, writeFileSync } from "node:fs";

const [wasmPath, gluePath] = process.argv.slice(2);
if (!wasmPath || !gluePath) {
  console.error("usage: node shorten-names.mjs module.wasm glue.js");
  process.exit(2);
}
const fail = (why) => {
  console.error(`shorten-names: ${why}`);
  process.exit(1);
};

const bytes = readFileSync(wasmPath);
let glue = readFileSync(gluePath, "utf8");

// --- reading and writing the binary format --------------------------------
let pos = 0;
const u32 = () => {
  let result = 0;
  let shift = 0;
  for (;;) {
    const b = bytes[pos++];
    result |= (b & 0x7f) << shift;
    if (!(b & 0x80)) return result >>> 0;
    shift += 7;
  }
};
const name = () => {
  const len = u32();
  const s = bytes.subarray(pos, pos + len).toString("utf8");
  pos += len;
  return s;
};
const limits = () => {
  const flags = bytes[pos++];
  u32();
  if (flags & 1) u32();
};
const leb = (n) => {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return Buffer.from(out);
};
const str = (s) => {
  const b = Buffer.from(s, "utf8");
  return Buffer.concat([leb(b.length), b]);
};

// Short names: a..z, A..Z, then two letters.
const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const short = (i) => (i < letters.length ? letters[i] : letters[Math.floor(i / letters.length) - 1] + letters[i % letters.length]);

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const count = (re) => (glue.match(re) || []).length;

if (bytes.readUInt32LE(0) !== 0x6d736100) fail(`${wasmPath} is not a wasm module`);
pos = 8;
const parts = [bytes.subarray(0, 8)];
let modules = new Map();
while (pos < bytes.length) {
  const start = pos;
  const id = bytes[pos++];
  const size = u32();
  const body = pos;
  const end = body + size;
  if (id === 2) {
    // Imports: module, name, then a description whose length depends on the kind.
    const n = u32();
    const out = [leb(n)];
    for (let i = 0; i < n; i++) {
      const module = name();
      const field = name();
      const descStart = pos;
      const kind = bytes[pos++];
      if (kind === 0) u32();
      else if (kind === 1) {
        pos++;
        limits();
      } else if (kind === 2) limits();
      else if (kind === 3) pos += 2;
      else if (kind === 4) {
        pos++;
        u32();
      } else fail(`unknown import kind ${kind}`);
      if (!modules.has(module)) modules.set(module, short(modules.size));
      const to = short(i);
      // In the glue, an import is a key of the import object: `name: function(`.
      const re = new RegExp(`(^|[\\s,{])${escape(field)}(?=\\s*:)`, "g");
      if (count(new RegExp(`\\b${escape(field)}\\b`, "g")) !== 1 || count(re) !== 1) {
        fail(`import ${field} is not used once as a key in the glue`);
      }
      glue = glue.replace(re, `$1${to}`);
      out.push(str(modules.get(module)), str(to), bytes.subarray(descStart, pos));
    }
    if (pos !== end) fail("import section misread");
    const payload = Buffer.concat(out);
    parts.push(Buffer.from([2]), leb(payload.length), payload);
  } else if (id === 7) {
    // Exports: the glue reads each as `wasm.name`, never by a computed name.
    const n = u32();
    const out = [leb(n)];
    for (let i = 0; i < n; i++) {
      const field = name();
      const descStart = pos;
      pos++;
      u32();
      const to = `_${short(i)}`;
      // (A glue function may share an export's name; terser renames it.)
      const uses = new RegExp(`\\bwasm\\.${escape(field)}\\b`, "g");
      if (count(new RegExp(`["'\`]${escape(field)}["'\`]`, "g"))) fail(`export ${field} is named in a string in the glue`);
      glue = glue.replace(uses, `wasm.${to}`);
      out.push(str(to), bytes.subarray(descStart, pos));
    }
    if (pos !== end) fail("export section misread");
    const payload = Buffer.concat(out);
    parts.push(Buffer.from([7]), leb(payload.length), payload);
  } else {
    parts.push(bytes.subarray(start, end));
  }
  pos = end;
}
for (const [module, to] of modules) {
  const key = JSON.stringify(module);
  if (count(new RegExp(escape(key), "g")) !== 1) fail(`import module ${key} is not named once in the glue`);
  glue = glue.replace(key, JSON.stringify(to));
}
// The package loads the module asynchronously only (index.js, through the
// default export): without its export, the minifier drops `initSync`.
const exportLine = "export { initSync, __wbg_init as default };";
if (count(new RegExp(escape(exportLine), "g")) !== 1) fail("the glue's export line is not as expected");
glue = glue.replace(exportLine, "export { __wbg_init as default };");
writeFileSync(wasmPath, Buffer.concat(parts));
writeFileSync(gluePath, glue);
