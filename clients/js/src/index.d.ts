/** One option argument: booleans are written as 1/0, numbers and strings as they print. */
export type OptionArgument = string | number | boolean;

/** An option value: one argument, or several (joined with `:`); null/undefined leave the option out. */
export type OptionValue = OptionArgument | readonly OptionArgument[] | null | undefined;

/**
 * Processing options named after imgproxy's, long or short (`width` / `w`, `min_width` / `min-width` / `mw`).
 * `resizing_type`, `width`, `height` and `enlarge` are written as one `rs:` option when `resizing_type` is given.
 */
export interface UrlOptions {
  /** Output format as `@ext` (plain sources) or `.ext` (base64url sources). */
  extension?: string | null;
  /** Preset name(s), written (after the builder's own presets) as `pr:a:b`. */
  preset?: string | readonly string[] | null;
  resizing_type?: "fit" | "fill" | "fill-down" | "force" | "auto" | (string & {}) | null;
  width?: number | null;
  height?: number | null;
  enlarge?: boolean | number | null;
  gravity?: OptionValue;
  quality?: number | null;
  format?: string | null;
  [option: string]: OptionValue;
}

export interface UrlBuilderOptions {
  /** Hex string (as in IMGORIGIN_KEY) or raw bytes; without key and salt URLs are `/insecure/...`. */
  key?: string | Uint8Array | ArrayBuffer | null;
  /** Hex string (as in IMGORIGIN_SALT) or raw bytes. */
  salt?: string | Uint8Array | ArrayBuffer | null;
  /** Bytes of the HMAC-SHA256 digest kept (1..32, default 32), as IMGORIGIN_SIGNATURE_SIZE. */
  signatureSize?: number;
  /** Write sources as base64url instead of `plain/<percent-encoded url>`. */
  encode?: boolean;
  /** Presets put in front of every URL's `pr:` list. */
  presets?: string | readonly string[];
}

/** Makes signed URLs for one server, like the Python `imgorigin.urlbuilder.UrlBuilder`. */
export declare class UrlBuilder {
  constructor(baseUrl?: string, options?: UrlBuilderOptions);
  readonly baseUrl: string;
  /** The signed path `/<signature>/<options>/<source>`. */
  path(source: string, options?: UrlOptions): Promise<string>;
  /** The absolute signed URL (base URL + path). */
  url(source: string, options?: UrlOptions): Promise<string>;
  /** A `srcset` value: `<url> <w>w, ...`, one signed URL per width. */
  srcset(source: string, widths: Iterable<number>, options?: UrlOptions): Promise<string>;
}

/** imgproxy option names: long name -> aliases (the first alias is the short name written). */
export declare const OPTION_NAMES: Readonly<Record<string, readonly string[]>>;
/** The short name written in URLs for an option name, or undefined. */
export declare function shortName(name: string): string | undefined;
/** base64url(HMAC-SHA256(key, salt + path)[:size]) without padding. */
export declare function signPath(
  key: string | Uint8Array | ArrayBuffer,
  salt: string | Uint8Array | ArrayBuffer,
  path: string,
  size?: number,
): Promise<string>;
/** Percent-encodes a plain source exactly as the Python helper (`quote(src, safe=":/=&+$,;~!*'()[]")`). */
export declare function quoteSource(source: string): string;
/** URL-safe base64 without padding. */
export declare function base64url(bytes: Uint8Array): string;
export default UrlBuilder;
