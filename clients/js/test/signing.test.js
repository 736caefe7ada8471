// Signing: every vector of imgproxy.md §2.2 (the same table as tests/test_signing.py), the
// node:crypto fallback, and the builder's argument checks.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, it } from "node:test";

import { UrlBuilder, base64url, quoteSource, signPath } from "../src/index.js";

const DOC_KEY = "736563726574";
const DOC_SALT = "68656C6C6F";
const TEST_KEY = "746573742d6b6579";
const TEST_SALT = "746573742d73616c74";
const EX_KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881";
const EX_SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";
const DOC_PATH = "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
const EX_PATH = "/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg";

export const VECTORS = [
  [DOC_KEY, DOC_SALT, 32, DOC_PATH, "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8"],
  [TEST_KEY, TEST_SALT, 32, "/asd", "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20"],
  [TEST_KEY, TEST_SALT, 8, "/asd", "oWaL7QoW5Ts"],
  ["746573742d6b657932", "746573742d73616c7432", 32, "/asd", "jYz1UZ7j1BCdSzH3pZhaYf0iuz0vusoOTdqJsUT6WXI"],
  [TEST_KEY, TEST_SALT, 32, "/rs:fill:4:4/plain/local:///test1.png", "My9d3xq_PYpVHsPrCyww0Kh1w5KZeZhIlWhsa4az1TI"],
  [EX_KEY, EX_SALT, 32, EX_PATH, "m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc"],
  [EX_KEY, EX_SALT, 8, EX_PATH, "m3k5QADfcKM"],
];

const hex = (text) => Buffer.from(text, "hex");

/** Run `fn` with globalThis.crypto hidden, so the node:crypto fallback is taken. */
async function withoutWebCrypto(fn) {
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true, writable: true });
  try {
    assert.equal(globalThis.crypto, undefined);
    return await fn();
  } finally {
    Object.defineProperty(globalThis, "crypto", descriptor);
  }
}

describe("imgproxy §2.2 signing vectors", () => {
  for (const [key, salt, size, path, signature] of VECTORS) {
    it(`${path.slice(0, 40)} size ${size} (WebCrypto)`, async () => {
      assert.ok(globalThis.crypto?.subtle, "WebCrypto must be there in Node 20");
      assert.equal(await signPath(key, salt, path, size), signature);
      assert.equal(await signPath(hex(key), hex(salt), path, size), signature, "raw bytes");
      assert.equal(await signPath(key.toUpperCase(), salt.toLowerCase(), path, size), signature, "hex case");
    });
    it(`${path.slice(0, 40)} size ${size} (node:crypto fallback)`, async () => {
      assert.equal(await withoutWebCrypto(() => signPath(key, salt, path, size)), signature);
    });
  }

  it("the builder signs the vector paths exactly", async () => {
    const builder = new UrlBuilder("", { key: TEST_KEY, salt: TEST_SALT });
    assert.equal(await builder.path("local:///test1.png", { resizing_type: "fill", width: 4, height: 4 }),
      "/My9d3xq_PYpVHsPrCyww0Kh1w5KZeZhIlWhsa4az1TI/rs:fill:4:4/plain/local:///test1.png");
    const short = new UrlBuilder("https://img.example", { key: EX_KEY, salt: EX_SALT, signatureSize: 8 });
    assert.equal(await short.url("http://img.example.com/pretty/image.jpg", { resizing_type: "fit", width: 300, height: 300 }),
      `https://img.example/m3k5QADfcKM${EX_PATH}`);
  });

  it("an empty key signs like node:crypto's HMAC with an empty key", async () => {
    const expected = base64url(createHmac("sha256", Buffer.alloc(0)).update("/asd").digest());
    assert.equal(await signPath("", "", "/asd"), expected);
    assert.equal(await withoutWebCrypto(() => signPath("", "", "/asd")), expected);
  });

  it("signs the UTF-8 bytes of the path", async () => {
    const path = "/w:10/plain/https://例え.jp/ü.png";
    const expected = base64url(createHmac("sha256", hex(EX_KEY)).update(Buffer.concat([hex(EX_SALT), Buffer.from(path)])).digest());
    assert.equal(await signPath(EX_KEY, EX_SALT, path), expected);
  });
});

describe("argument checks", () => {
  it("rejects a key without a salt and the other way round", () => {
    assert.throws(() => new UrlBuilder("", { key: EX_KEY }), /key and salt go together/);
    assert.throws(() => new UrlBuilder("", { salt: EX_SALT }), /key and salt go together/);
  });
  it("rejects signature sizes outside 1..32", async () => {
    for (const size of [0, 33, 1.5, -1]) {
      assert.throws(() => new UrlBuilder("", { key: EX_KEY, salt: EX_SALT, signatureSize: size }), RangeError);
      await assert.rejects(signPath(EX_KEY, EX_SALT, "/asd", size), RangeError);
    }
  });
  it("rejects keys that are not hex", () => {
    assert.throws(() => new UrlBuilder("", { key: "xyz", salt: "00" }), /not a hex string/);
    assert.throws(() => new UrlBuilder("", { key: "abc", salt: "00" }), /not a hex string/);
  });
  it("rejects lone surrogates like Python's encoder", async () => {
    await assert.rejects(new UrlBuilder().url("http://a/\uD800.png"), TypeError);
    assert.throws(() => quoteSource("\uDC00"), TypeError);
  });
  it("without key and salt URLs are insecure, base URL slashes are trimmed", async () => {
    const builder = new UrlBuilder("https://img.example//");
    assert.equal(builder.baseUrl, "https://img.example");
    assert.equal(await builder.url("local:///a.png", { w: 10 }), "https://img.example/insecure/w:10/plain/local:///a.png");
  });
  it("does not change the caller's options", async () => {
    const options = Object.freeze({ resizing_type: "fill", width: 10, extension: "webp", preset: ["a"] });
    const builder = new UrlBuilder("", { key: EX_KEY, salt: EX_SALT });
    const first = await builder.url("local:///a.png", options);
    assert.equal(await builder.url("local:///a.png", options), first);
    assert.deepEqual(Object.keys(options), ["resizing_type", "width", "extension", "preset"]);
  });
  it("accepts hyphenated long names as JS object keys", async () => {
    const builder = new UrlBuilder("", { key: EX_KEY, salt: EX_SALT });
    assert.equal(await builder.path("local:///a.png", { "min-width": 5, "resizing-type": "fit", width: 9 }),
      await builder.path("local:///a.png", { min_width: 5, resizing_type: "fit", width: 9 }));
  });
});
