import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { quoteSource } from "../../../clients/js/src/index.js";
import service, { DEFAULT_QUALITY, QUALITY_PRESETS, escapeSource } from "../astro/imgorigin-service.mjs";

const CONFIG = { service: { entrypoint: "./imgorigin-service.mjs", config: { baseUrl: "https://img.example/" } } };
const CAT = "https://bucket.example/cat.jpg";

describe("Astro image service", () => {
  it("writes an unsigned constrained URL from width, quality and format", () => {
    assert.equal(service.getURL({ src: CAT, width: 640, height: 480, quality: 70, format: "webp" }, CONFIG),
      "https://img.example/unsafe/rs:fit:640:0/q:70/plain/https://bucket.example/cat.jpg@webp");
  });

  it("maps Astro's quality presets and defaults", () => {
    assert.deepEqual(QUALITY_PRESETS, { low: 25, mid: 50, high: 80, max: 100 });
    assert.equal(service.getURL({ src: CAT, width: 320, quality: "mid" }, CONFIG),
      "https://img.example/unsafe/rs:fit:320:0/q:50/plain/https://bucket.example/cat.jpg");
    assert.equal(service.getURL({ src: CAT, width: 320 }, CONFIG),
      `https://img.example/unsafe/rs:fit:320:0/q:${DEFAULT_QUALITY}/plain/https://bucket.example/cat.jpg`);
    const custom = { service: { config: { baseUrl: "https://img.example", defaultQuality: 60 } } };
    assert.equal(service.getURL({ src: CAT, width: 320 }, custom),
      "https://img.example/unsafe/rs:fit:320:0/q:60/plain/https://bucket.example/cat.jpg");
    assert.throws(() => service.getURL({ src: CAT, width: 320, quality: 101 }, CONFIG), RangeError);
  });

  it("takes imported images (ImageMetadata) and prefixes site paths", () => {
    const image = { src: "/_astro/cat.1a2b3c.jpg", width: 1600, height: 1200, format: "jpg" };
    assert.equal(service.getURL({ src: image, width: 800, format: "avif" }, CONFIG),
      "https://img.example/unsafe/rs:fit:800:0/q:80/plain/local:///_astro/cat.1a2b3c.jpg@avif");
    const site = { service: { config: { baseUrl: "https://img.example", sourcePrefix: "https://www.example.com" } } };
    assert.equal(service.getURL({ src: image, width: 800 }, site),
      "https://img.example/unsafe/rs:fit:800:0/q:80/plain/https://www.example.com/_astro/cat.1a2b3c.jpg");
  });

  it("falls back to the height, to /imgorigin without config, and never adds @svg", () => {
    assert.equal(service.getURL({ src: "https://a.example/x y.svg", height: 200, format: "svg" }, {}),
      "/imgorigin/unsafe/rs:fit:0:200/q:80/plain/https://a.example/x%20y.svg");
  });

  it("escapes like imgorigin's UrlBuilder", () => {
    for (const text of ["https://例え.jp/画像 😀.png", "a?b#c%d@e", "[]()!*'~;,$+&=:/"]) {
      assert.equal(escapeSource(text), quoteSource(text));
    }
  });

  it("keeps the other attributes for the <img>", () => {
    assert.deepEqual(service.getHTMLAttributes({ src: CAT, width: 640, height: 480, quality: 70, format: "webp", alt: "a cat" }),
      { width: 640, height: 480, alt: "a cat", loading: "lazy", decoding: "async" });
  });
});
