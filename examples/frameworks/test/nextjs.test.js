import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { quoteSource } from "../../../clients/js/src/index.js";
import loader, { DEFAULT_QUALITY, createLoader, escapeSource } from "../nextjs/imgorigin-loader.js";

const CAT = "https://bucket.example/cat.jpg";

describe("Next.js loader", () => {
  it("writes an unsigned constrained URL with width and quality", () => {
    const custom = createLoader({ baseUrl: "https://img.example/" });
    assert.equal(custom({ src: CAT, width: 640, quality: 60 }),
      "https://img.example/unsafe/rs:fit:640:0/q:60/plain/https://bucket.example/cat.jpg");
  });

  it("uses next/image's default quality when none is given", () => {
    assert.equal(DEFAULT_QUALITY, 75);
    const custom = createLoader({ baseUrl: "https://img.example" });
    assert.equal(custom({ src: CAT, width: 828 }),
      "https://img.example/unsafe/rs:fit:828:0/q:75/plain/https://bucket.example/cat.jpg");
    assert.equal(createLoader({ defaultQuality: 50 })({ src: CAT, width: 64, quality: 0 }),
      "/imgorigin/unsafe/rs:fit:64:0/q:50/plain/https://bucket.example/cat.jpg");
  });

  it("the default export reads nothing it is not given: same-origin /imgorigin and local://", () => {
    assert.equal(loader({ src: "/photos/cat 1.jpg", width: 1080, quality: 80 }),
      "/imgorigin/unsafe/rs:fit:1080:0/q:80/plain/local:///photos/cat%201.jpg");
  });

  it("prefixes root-relative sources, leaves absolute and protocol-relative ones", () => {
    const custom = createLoader({ baseUrl: "https://img.example", sourcePrefix: "https://www.example.com" });
    assert.equal(custom({ src: "/cat.jpg", width: 256 }),
      "https://img.example/unsafe/rs:fit:256:0/q:75/plain/https://www.example.com/cat.jpg");
    assert.equal(custom({ src: "//cdn.example/cat.jpg", width: 256 }),
      "https://img.example/unsafe/rs:fit:256:0/q:75/plain///cdn.example/cat.jpg");
  });

  it("escapes the source exactly like imgorigin's UrlBuilder", () => {
    const custom = createLoader({ baseUrl: "" });
    const src = "https://bucket.example/a b/ü@2x.jpg?x=1&y=[2]#frag";
    assert.equal(custom({ src, width: 10 }),
      "/unsafe/rs:fit:10:0/q:75/plain/https://bucket.example/a%20b/%C3%BC%402x.jpg%3Fx=1&y=[2]%23frag");
    let every = "";
    for (let code = 0; code < 0x80; code += 1) every += String.fromCharCode(code);
    for (const text of [every, "例え😀", "%20", "it's(1)*!~"]) assert.equal(escapeSource(text), quoteSource(text));
  });

  it("refuses widths that are not positive integers", () => {
    for (const width of [0, -1, 10.5, undefined, "640"]) {
      assert.throws(() => loader({ src: CAT, width }), RangeError);
    }
  });
});
