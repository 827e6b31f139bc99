/**
 * Loaded before any test (`node --import`): libsodium's ESM build needs `globalThis.crypto`, which
 * browsers and Node.js 19+ have and Debian 12's Node.js 18 exposes only from `node:crypto`.
 */

import { webcrypto } from "node:crypto";

if (globalThis.crypto === undefined) {
  Object.defineProperty(globalThis, "crypto", { value: webcrypto, configurable: true });
}
