// imgorigin-url: build signed imgorigin (and imgproxy) URLs. Zero dependencies, ESM.
//
// The same vocabulary and output as the Python helper `imgorigin.urlbuilder.UrlBuilder`:
// options named after imgproxy's, long or short (`width` or `w`, `min_width`, `min-width` or `mw`);
// a value is a scalar or an array of arguments; booleans become 1/0; null/undefined leave the option
// out; `resizing_type`/`width`/`height`/`enlarge` given together with `resizing_type` become one
// `rs:` option. Signing uses WebCrypto (HMAC-SHA256), so it runs in Node 20+, Deno, Bun, browsers
// and edge runtimes; `node:crypto` is used only where WebCrypto is missing.

/** imgproxy option names: long name -> aliases, the first alias being the short name written. */
export const OPTION_NAMES = Object.freeze({
  resize: ["rs"], size: ["s"], resizing_type: ["rt"], width: ["w"], height: ["h"],
  "min-width": ["mw"], "min-height": ["mh"], zoom: ["z"], dpr: [], enlarge: ["el"],
  extend: ["ex"], extend_aspect_ratio: ["extend_ar", "exar"], gravity: ["g"], crop: ["c"],
  padding: ["pd"], auto_rotate: ["ar"], rotate: ["rot"], flip: ["fl"],
  background: ["bg"], blur: ["bl"], sharpen: ["sh"], strip_metadata: ["sm"],
  keep_copyright: ["kcr"], strip_color_profile: ["scp"], quality: ["q"],
  format_quality: ["fq"], format: ["f", "ext"], cachebuster: ["cb"], expires: ["exp"],
  filename: ["fn"], return_attachment: ["att"], preset: ["pr"],
  max_src_resolution: ["msr"], max_src_file_size: ["msfs"], max_animation_frames: ["maf"],
  max_animation_frame_resolution: ["mafr"], max_result_dimension: ["mrd"],
  trim: ["t"], pixelate: ["pix"], watermark: ["wm"], max_bytes: ["mb"],
  skip_processing: ["skp"], raw: [],
});

/** Every spelling (with `_` for `-`) -> the short name written in URLs. */
const NAMES = new Map();
for (const [long, aliases] of Object.entries(OPTION_NAMES)) {
  const short = aliases.length ? aliases[0] : long;
  for (const alias of [long, ...aliases]) NAMES.set(alias.replaceAll("-", "_"), short);
}
const RESIZE_PARTS = ["resizing_type", "width", "height", "enlarge"];

/** The short name written in URLs for an option name, or undefined when it is not an option. */
export function shortName(name) {
  return NAMES.get(String(name).replaceAll("-", "_"));
}

// --- encoding helpers ------------------------------------------------------------------------

const encoder = new TextEncoder();

function utf8(text) {
  // Python's str.encode() refuses lone surrogates; TextEncoder would silently write U+FFFD
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text)) {
    throw new TypeError("source contains a lone surrogate");
  }
  return encoder.encode(text);
}

// urllib.parse.quote(source, safe=":/=&+$,;~!*'()[]"): letters, digits and "_.-~" are always safe
const SAFE = new Set(
  Array.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~:/=&+$,;!*'()[]",
    (c) => c.charCodeAt(0)),
);

/** Percent-encode `text` exactly as the Python helper does (UTF-8, uppercase hex). */
export function quoteSource(text) {
  let out = "";
  for (const byte of utf8(text)) {
    out += SAFE.has(byte) ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** URL-safe base64 without `=` padding. */
export function base64url(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function toBytes(value, what) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (typeof value !== "string") throw new TypeError(`${what} must be a hex string or bytes`);
  const hex = value.replace(/\s+/g, "");
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) throw new TypeError(`${what} is not a hex string`);
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i += 1) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

async function hmacSha256(key, message) {
  const subtle = globalThis.crypto?.subtle;
  if (subtle) {
    // WebCrypto refuses an empty HMAC key; HMAC pads keys with zeros to the block size, so an
    // empty key is the same key as 64 zero bytes
    const raw = key.length ? key : new Uint8Array(64);
    const cryptoKey = await subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await subtle.sign("HMAC", cryptoKey, message));
  }
  const specifier = "node:crypto"; // a variable, so bundlers for the browser/edge leave it alone
  const { createHmac } = await import(/* webpackIgnore: true */ /* @vite-ignore */ specifier);
  return new Uint8Array(createHmac("sha256", key).update(message).digest());
}

/**
 * The signature of `path` (everything after the signature segment, leading `/` included):
 * base64url, unpadded, of the first `size` bytes of HMAC-SHA256(key, salt + path).
 */
export async function signPath(key, salt, path, size = 32) {
  checkSize(size);
  const digest = await hmacSha256(toBytes(key, "key"), concat(toBytes(salt, "salt"), utf8(path)));
  return base64url(digest.subarray(0, size));
}

function checkSize(size) {
  if (!Number.isInteger(size) || size < 1 || size > 32) {
    throw new RangeError("signatureSize must be from 1 to 32");
  }
}

function arg(value) {
  if (typeof value === "boolean") return value ? "1" : "0";
  return String(value);
}

const isNone = (value) => value === undefined || value === null;

// --- the builder -------------------------------------------------------------------------------

/** Makes signed URLs for one server: `url`, `path` and `srcset`. */
export class UrlBuilder {
  #key;
  #salt;
  #size;
  #encode;
  #presets;

  /**
   * `key`/`salt` are hex strings (as in IMGORIGIN_KEY/SALT) or bytes; without them URLs carry
   * `insecure` as the signature. `encode` writes sources as base64url.
   */
  constructor(baseUrl = "", { key, salt, signatureSize = 32, encode = false, presets = [] } = {}) {
    this.baseUrl = String(baseUrl ?? "").replace(/\/+$/, "");
    this.#key = isNone(key) ? null : toBytes(key, "key");
    this.#salt = isNone(salt) ? null : toBytes(salt, "salt");
    if ((this.#key === null) !== (this.#salt === null)) throw new TypeError("key and salt go together");
    checkSize(signatureSize);
    this.#size = signatureSize;
    this.#encode = Boolean(encode);
    this.#presets = typeof presets === "string" ? [presets] : [...presets];
  }

  /** The signed path (`/<signature>/<options>/<source>`) for `source` with `options`. */
  async path(source, options = {}) {
    const { extension, preset, ...rest } = options ?? {};
    const segments = this.#segments(preset, rest);
    const suffix = (mark) => (extension ? `${mark}${extension}` : "");
    const tail = this.#encode
      ? base64url(utf8(String(source))) + suffix(".")
      : `plain/${quoteSource(String(source))}${suffix("@")}`;
    const unsigned = `/${[...segments, tail].join("/")}`;
    if (this.#key === null || this.#salt === null) return `/insecure${unsigned}`;
    return `/${await signPath(this.#key, this.#salt, unsigned, this.#size)}${unsigned}`;
  }

  /** The absolute signed URL (base URL + `path`). */
  async url(source, options = {}) {
    return this.baseUrl + (await this.path(source, options));
  }

  /** A `srcset` value: one signed URL per width, each followed by its `<width>w` descriptor. */
  async srcset(source, widths, options = {}) {
    const { width: _width, w: _w, ...rest } = options ?? {};
    const urls = await Promise.all([...widths].map((w) => this.url(source, { width: w, ...rest })));
    return [...widths].map((w, i) => `${urls[i]} ${w}w`).join(", ");
  }

  #segments(preset, options) {
    const segments = [];
    const names = [...this.#presets, ...(typeof preset === "string" ? [preset] : [...(preset ?? [])])];
    if (names.length) segments.push(`pr:${names.join(":")}`);
    // normalise `min-width` to `min_width`, keeping the caller's order
    const entries = new Map();
    for (const [name, value] of Object.entries(options)) entries.set(name.replaceAll("-", "_"), value);
    const resize = RESIZE_PARTS.map((part) => {
      const value = entries.get(part);
      entries.delete(part);
      return value;
    });
    if (!isNone(resize[0])) {
      const args = resize.map((value) => (isNone(value) ? "" : arg(value)));
      while (args.length && !args[args.length - 1]) args.pop();
      segments.push(`rs:${args.join(":")}`);
    } else {
      // without a resizing type they are plain options, written after the others (as in Python)
      RESIZE_PARTS.slice(1).forEach((part, i) => {
        if (!isNone(resize[i + 1])) entries.set(part, resize[i + 1]);
      });
    }
    for (const [name, value] of entries) {
      if (isNone(value)) continue;
      const option = NAMES.get(name);
      if (option === undefined || option === "pr") throw new TypeError(`unknown imgorigin option '${name}'`);
      const values = Array.isArray(value) ? value : [value];
      segments.push(`${option}:${values.map(arg).join(":")}`);
    }
    return segments;
  }
}

export default UrlBuilder;
