// Nuxt Image (@nuxt/image) with its built-in `imgproxy` provider pointed at imgorigin.
// imgorigin speaks imgproxy's URL format and signature, so the provider works unchanged.
//
// READ nuxt/README.md FIRST: Nuxt Image builds image URLs in the browser as well as on the server,
// so provider options, key and salt included, end up in the public client bundle. Whoever reads
// the bundle can sign any URL. Set IMGORIGIN_NUXT_SIGN=1 only for a site whose bundle never
// reaches a browser you do not control; otherwise leave it unset and run imgorigin in unsigned
// constrained mode (the provider then writes `unsafe` URLs).
const sign = process.env.IMGORIGIN_NUXT_SIGN === "1";

export default defineNuxtConfig({
  modules: ["@nuxt/image"],
  image: {
    provider: "imgproxy",
    imgproxy: {
      // where imgorigin (or the CDN in front of it) is served
      baseURL: process.env.IMGORIGIN_URL ?? "http://127.0.0.1:8080/",
      // hex strings, the same values as the server's IMGORIGIN_KEY / IMGORIGIN_SALT
      ...(sign ? { key: process.env.IMGORIGIN_KEY, salt: process.env.IMGORIGIN_SALT } : {}),
    },
    // keep the set of variants small: with unsigned URLs these are what the server should allow
    screens: { sm: 640, md: 768, lg: 1024, xl: 1280 },
    quality: 80,
  },
});
