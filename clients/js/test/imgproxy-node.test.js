// Our signature for a path equals the one the official @imgproxy/imgproxy-node 1.1.0 computes.
// The library is installed by `npm ci --prefix tests/clients/node` (repository root).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { UrlBuilder, signPath } from "../src/index.js";

// imgproxy-node reads IMGPROXY_KEY/SALT at import time and falls back to them: drop them first
delete process.env.IMGPROXY_KEY;
delete process.env.IMGPROXY_SALT;
delete process.env.IMGPROXY_SOURCE_URL_ENCRYPTION_KEY;

const LIBRARY = new URL(
  "../../../tests/clients/node/node_modules/@imgproxy/imgproxy-node/dist/esm/index.js", import.meta.url);
let generateImageUrl;
try {
  ({ generateImageUrl } = await import(LIBRARY.href));
} catch (err) {
  throw new Error(`@imgproxy/imgproxy-node is missing: run \`npm ci --prefix tests/clients/node\` (${err.message})`);
}

const KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881";
const SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";
const CAT = "http://127.0.0.1:18090/images/cat.jpg";

function theirs(source, options, { encode = true, key = KEY, salt = SALT } = {}) {
  return generateImageUrl({
    endpoint: "",
    url: { value: source, displayAs: encode ? "base64" : "plain" },
    options,
    key,
    salt,
  });
}

function split(path) {
  const slash = path.indexOf("/", 1);
  return [path.slice(1, slash), path.slice(slash)];
}

// [their options, display, our options for the same path (null: only the signature is compared)]
const CASES = [
  [{ resize: { resizing_type: "fill", width: 300, height: 200 }, gravity: { type: "sm" } }, true, null],
  [{ width: 100, format: "webp" }, true, null],
  [{ resize: { resizing_type: "fit", width: 50, height: 50, enlarge: 1 } }, true, null],
  [{ quality: 70, blur: 2 }, true, { blur: 2, quality: 70 }],
  [{ dpr: 2, width: 80 }, true, { dpr: 2, width: 80 }],
  [{ width: 100 }, true, { width: 100 }],
  [{ width: 100 }, false, { width: 100 }],
  [{ gravity: { type: "fp", x: 0.5, y: 0.3 }, quality: 80 }, false, { gravity: ["fp", 0.5, 0.3], quality: 80 }],
  [{ preset: ["thumb", "blurry"] }, false, { preset: ["thumb", "blurry"] }],
  [{ format: "png" }, false, { format: "png" }],
];

describe("signatures equal @imgproxy/imgproxy-node's", () => {
  CASES.forEach(([options, encode, ours], i) => {
    it(`#${i} ${JSON.stringify(options)} ${encode ? "base64" : "plain"}`, async () => {
      const path = theirs(CAT, options, { encode });
      const [signature, unsigned] = split(path);
      assert.equal(signature.length, 43);
      assert.equal(await signPath(KEY, SALT, unsigned), signature, "signature of their path");
      if (ours !== null) {
        const builder = new UrlBuilder("", { key: KEY, salt: SALT, encode });
        assert.equal(await builder.path(CAT, ours), path, "the same path, signed the same");
      }
    });
  });

  it("unsigned URLs are insecure in both", async () => {
    assert.equal(theirs(CAT, { width: 10 }, { encode: false, key: "", salt: "" }),
      await new UrlBuilder().path(CAT, { width: 10 }));
  });

  it("the README's worked example", async () => {
    const path = theirs(CAT, { resize: { resizing_type: "fill", width: 300, height: 200 }, gravity: { type: "sm" } });
    assert.equal(path, "/zxA2vIZHPFMVcMFMTMD3n73DGnltj5MHRwqVlIlGGzE/g:sm/rs:fill:300:200/aHR0cDovLzEyNy4wLjAuMToxODA5MC9pbWFnZXMvY2F0LmpwZw");
    const builder = new UrlBuilder("", { key: KEY, salt: SALT, encode: true });
    assert.equal(await builder.path(CAT, { gravity: "sm", resize: ["fill", 300, 200] }), path);
  });
});
