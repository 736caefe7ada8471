// Next.js custom image loader for imgorigin (next.config.js: images.loader "custom", loaderFile).
//
// A loader runs in the browser too, so it cannot hold the signing key: it writes UNSIGNED
// constrained URLs, `<base>/unsafe/rs:fit:<width>:0/q:<quality>/plain/<escaped src>`. The server
// accepts `unsafe` in its unsigned constrained mode only for the allowed widths (set them to
// Next's deviceSizes + imageSizes), qualities and formats, and only for allowed sources.
//
// Configuration comes from public build-time variables (Next inlines NEXT_PUBLIC_*):
//   NEXT_PUBLIC_IMGORIGIN_URL     where imgorigin is served, e.g. https://img.example (default "/imgorigin")
//   NEXT_PUBLIC_IMGORIGIN_SOURCE  prefix for root-relative srcs such as "/cat.jpg" (default "local://",
//                                 giving local:///cat.jpg; use your site's origin to fetch from it)

export const DEFAULT_QUALITY = 75; // next/image's own default

// urllib.parse.quote(src, safe=":/=&+$,;~!*'()[]"), as imgorigin's UrlBuilder escapes plain sources
const SAFE = /[A-Za-z0-9_.\-~:/=&+$,;!*'()[\]]/;

export function escapeSource(src) {
  let out = "";
  for (const byte of new TextEncoder().encode(src)) {
    const char = String.fromCharCode(byte);
    out += byte < 0x80 && SAFE.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** A loader with explicit settings (the default export reads them from NEXT_PUBLIC_* variables). */
export function createLoader({ baseUrl = "/imgorigin", sourcePrefix = "local://", defaultQuality = DEFAULT_QUALITY } = {}) {
  const base = String(baseUrl).replace(/\/+$/, "");
  return function imgoriginLoader({ src, width, quality }) {
    if (!Number.isInteger(width) || width <= 0) throw new RangeError(`imgorigin loader: bad width ${width}`);
    const q = quality || defaultQuality;
    const source = src.startsWith("/") && !src.startsWith("//") ? sourcePrefix + src : src;
    return `${base}/unsafe/rs:fit:${width}:0/q:${q}/plain/${escapeSource(source)}`;
  };
}

function env(read) {
  try {
    return read(); // `process.env.NEXT_PUBLIC_*` is replaced by its value at build time
  } catch {
    return undefined; // no `process` (plain browser, tests in other runtimes)
  }
}

const loader = createLoader({
  baseUrl: env(() => process.env.NEXT_PUBLIC_IMGORIGIN_URL) || "/imgorigin",
  sourcePrefix: env(() => process.env.NEXT_PUBLIC_IMGORIGIN_SOURCE) || "local://",
});

export default function imgoriginLoader({ src, width, quality }) {
  return loader({ src, width, quality });
}
