// resub for the browser: the default entry, which loads the .wasm file
// beside it (a separate, cacheable file that Vite and webpack copy as an
// asset) on first use. `resub/inline` is the same API with the wasm inside.
import { setSource } from "./client.js";

export { Client, ResubError, Subscription, init } from "./client.js";

/** Whether a response can be the wasm (not an app's HTML fallback page). */
const wasm = (res) => res.ok && !/text\/html/.test(res.headers.get("content-type") ?? "");

setSource(async () => {
  let res = await fetch(new URL("./resub_wasm_bg.wasm", import.meta.url));
  // Vite 5 and 6 serve dependencies pre-bundled from node_modules/.vite/deps,
  // where the file beside this one is not: the package's own folder has it.
  if (!wasm(res) && import.meta.url.includes("/.vite/deps/")) {
    // Built at run time, so that bundlers do not try to resolve it at build time.
    const inPackage = ["..", "..", "resub", "resub_wasm_bg.wasm"].join("/");
    res = await fetch(new URL(inPackage, import.meta.url));
  }
  if (!wasm(res)) {
    throw new Error(
      `${res.url}: HTTP ${res.status} ${res.headers.get("content-type") ?? ""} (serve resub_wasm_bg.wasm beside resub's index.js, or use "resub/inline")`,
    );
  }
  return res;
});
