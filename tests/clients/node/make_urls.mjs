#!/usr/bin/env node
// Generate signed imgproxy paths with the @imgproxy/imgproxy-node library.
//
// stdin:  {"key": "<hex>", "salt": "<hex>",
//          "cases": [{"url": "<source url>", "options": {...}, "encode": true|false}, ...]}
// stdout: JSON array of paths, one per case, in order, e.g.
//         ["/<signature>/g:sm/rs:fill:300:200/<base64url source>", ...]
//
// "options" is passed verbatim to the library as its `options` object
// (see README.md next to this directory). "encode" (default true) selects the
// library's `displayAs`: true -> "base64", false -> "plain" (`/plain/<url>`).
// An empty/missing key or salt yields an `/insecure/...` path.
//
// Exit status 1 (message on stderr) when the input is malformed or the library
// rejects an option; nothing is printed on stdout in that case.

// imgproxy-node reads IMGPROXY_KEY / IMGPROXY_SALT from the environment *at
// import time* and falls back to them whenever key or salt is not given.
// Drop them before the (dynamic) import so the output depends on stdin only.
delete process.env.IMGPROXY_KEY;
delete process.env.IMGPROXY_SALT;
delete process.env.IMGPROXY_SOURCE_URL_ENCRYPTION_KEY;

const { generateImageUrl } = await import("@imgproxy/imgproxy-node");

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

function fail(message) {
  process.stderr.write(`make_urls: ${message}\n`);
  process.exit(1);
}

let doc;
try {
  doc = JSON.parse(await readStdin());
} catch (err) {
  fail(`stdin is not valid JSON: ${err.message}`);
}
if (doc === null || typeof doc !== "object" || !Array.isArray(doc.cases)) {
  fail('expected an object with a "cases" array');
}

const key = doc.key || undefined;
const salt = doc.salt || undefined;

const paths = doc.cases.map((c, i) => {
  if (c === null || typeof c !== "object" || typeof c.url !== "string") {
    fail(`cases[${i}]: "url" must be a string`);
  }
  const encode = c.encode === undefined ? true : Boolean(c.encode);
  let url;
  try {
    url = generateImageUrl({
      // Empty endpoint: the library strips one trailing "/" from the endpoint
      // and concatenates, so the result is exactly the path.
      endpoint: "",
      url: { value: c.url, displayAs: encode ? "base64" : "plain" },
      options: c.options ?? undefined,
      key,
      salt,
    });
  } catch (err) {
    fail(`cases[${i}]: library rejected the case: ${err.message}`);
  }
  if (!url.startsWith("/")) fail(`cases[${i}]: unexpected result ${JSON.stringify(url)}`);
  return url;
});

process.stdout.write(`${JSON.stringify(paths)}\n`);
