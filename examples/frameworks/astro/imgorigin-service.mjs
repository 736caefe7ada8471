// Astro external image service for imgorigin (astro.config.mjs: image.service.entrypoint).
//
// Like the Next.js loader it writes UNSIGNED constrained URLs (the service also runs where the key
// must not be): `<baseUrl>/unsafe/rs:fit:<width>:0/q:<quality>/plain/<escaped src>[@<format>]`.
// The server accepts them only for its allowed widths, qualities, formats and sources.
//
//   image: { service: { entrypoint: "./src/imgorigin-service.mjs",
//                       config: { baseUrl: "https://img.example", sourcePrefix: "https://www.example.com" } } }
//
// `src` is a URL string or an imported image (ImageMetadata, whose `src` is a site path such as
// /_astro/cat.1a2b.jpg); site paths get `sourcePrefix` in front (default "local://").

export const DEFAULT_QUALITY = 80;
/** Astro's quality presets, as its own sharp service reads them. */
export const QUALITY_PRESETS = Object.freeze({ low: 25, mid: 50, high: 80, max: 100 });

const SAFE = /[A-Za-z0-9_.\-~:/=&+$,;!*'()[\]]/;

/** Escapes a plain source like imgorigin's UrlBuilder (quote with safe=":/=&+$,;~!*'()[]"). */
export function escapeSource(src) {
  let out = "";
  for (const byte of new TextEncoder().encode(src)) {
    const char = String.fromCharCode(byte);
    out += byte < 0x80 && SAFE.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function quality(value, fallback) {
  if (value === undefined || value === null || value === "") return fallback;
  if (typeof value === "string" && value in QUALITY_PRESETS) return QUALITY_PRESETS[value];
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1 || number > 100) throw new RangeError(`imgorigin: bad quality ${value}`);
  return number;
}

function size(value, what) {
  if (value === undefined || value === null) return 0;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 0) throw new RangeError(`imgorigin: bad ${what} ${value}`);
  return number;
}

const service = {
  /** The `src` of the <img>: an unsigned constrained imgorigin URL. */
  getURL(options, imageConfig) {
    const config = imageConfig?.service?.config ?? {};
    const base = String(config.baseUrl ?? "/imgorigin").replace(/\/+$/, "");
    const sourcePrefix = config.sourcePrefix ?? "local://";
    let src = typeof options.src === "string" ? options.src : options.src.src;
    if (src.startsWith("/") && !src.startsWith("//")) src = sourcePrefix + src;
    const width = size(options.width, "width");
    // one dimension only, so the set of variants stays the allowed widths; the other keeps the aspect ratio
    const resize = width ? `rs:fit:${width}:0` : `rs:fit:0:${size(options.height, "height")}`;
    const q = quality(options.quality, config.defaultQuality ?? DEFAULT_QUALITY);
    const format = options.format && options.format !== "svg" ? `@${options.format}` : "";
    return `${base}/unsafe/${resize}/q:${q}/plain/${escapeSource(src)}${format}`;
  },

  /** The other <img> attributes: what Astro passed, minus what only the URL needs. */
  getHTMLAttributes(options) {
    const { src: _src, format: _format, quality: _quality, ...attributes } = options;
    return { ...attributes, loading: options.loading ?? "lazy", decoding: options.decoding ?? "async" };
  },
};

export default service;
