// Equality with the Python helper: python-urls.json is what imgorigin.urlbuilder.UrlBuilder emits
// for a table of cases (regenerate with make-python-fixture.py; tests/test_frameworks.py checks it
// is current).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { OPTION_NAMES, UrlBuilder, shortName } from "../src/index.js";

const fixture = JSON.parse(readFileSync(new URL("./python-urls.json", import.meta.url), "utf8"));
const builders = Object.fromEntries(Object.entries(fixture.builders).map(([name, spec]) => {
  const { baseUrl, ...options } = spec;
  return [name, new UrlBuilder(baseUrl, options)];
}));

describe("same URLs as the Python UrlBuilder", () => {
  assert.ok(fixture.cases.length >= 30);
  fixture.cases.forEach((c, i) => {
    it(`#${i} ${c.builder}.${c.method}(${JSON.stringify(c.source).slice(0, 40)}, ${JSON.stringify(c.options)})`, async () => {
      const builder = builders[c.builder];
      const actual = c.method === "srcset"
        ? await builder.srcset(c.source, c.widths, c.options)
        : await builder[c.method](c.source, c.options);
      assert.equal(actual, c.expected);
    });
  });
});

describe("same option vocabulary as the Python UrlBuilder", () => {
  it("every Python spelling maps to the same short name", () => {
    for (const [name, short] of Object.entries(fixture.names)) assert.equal(shortName(name), short, name);
  });
  it("no JS spelling is unknown to Python", () => {
    for (const [long, aliases] of Object.entries(OPTION_NAMES)) {
      for (const alias of [long, ...aliases]) {
        assert.ok(alias.replaceAll("-", "_") in fixture.names, alias);
      }
    }
  });
  for (const error of fixture.errors) {
    it(`refuses ${JSON.stringify(error.options)} like Python (${error.error})`, async () => {
      await assert.rejects(builders.signed.url("https://bucket.example/cat.jpg", error.options),
        (err) => err.constructor.name === error.error && err.message === error.message);
    });
  }
});
