// Writes OUT/inline.js: resub's API with OUT/resub_wasm_bg.wasm inside, as
// base64 (for bundlers that copy no assets: esbuild, Rollup).
//   node scripts/inline-wasm.mjs OUT
import { readFileSync, writeFileSync } from "node:fs";

const out = process.argv[2];
const b64 = readFileSync(`${out}/resub_wasm_bg.wasm`).toString("base64");
writeFileSync(
  `${out}/inline.js`,
  `// resub for the browser, with the wasm inside: for bundlers that copy no
// assets (esbuild, Rollup). The same API as "resub".
import { setSource } from "./client.js";
export { Client, ResubError, Subscription, init } from "./client.js";
const WASM = "${b64}";
setSource(async () => Uint8Array.from(atob(WASM), (c) => c.charCodeAt(0)));
`,
);
