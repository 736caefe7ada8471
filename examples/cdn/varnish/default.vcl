# Varnish 7.x in front of imgorigin.
#
#   varnishd -a :80 -f /etc/varnish/default.vcl -s malloc,1g
#
# What this file does, and why (see docs/cdn.md):
# * Accept is normalised to what imgorigin can produce (AVIF, WebP or neither), so Chrome, Firefox and
#   Safari share one cached copy per output format instead of one per exact Accept string. imgorigin
#   answers `Vary: Accept`, which Varnish honours against the normalised header.
# * Images are never passed: every miss goes through the hash lookup, so concurrent misses for one URL
#   wait on Varnish's waiting list and reach the origin once (request collapsing).
# * Errors (status >= 400) are never cached: they become short hit-for-miss markers, so the next request
#   goes to the origin again and is not serialised behind the first.
# * Grace comes from the origin's `stale-while-revalidate` (IMGORIGIN_STALE_WHILE_REVALIDATE): an expired
#   copy is served at once while one background fetch refreshes it. A 5xx during that refresh keeps the
#   stale copy (stale-if-error).
# * Only GET and HEAD reach the origin; PURGE is accepted from the `purgers` ACL only; cookies are dropped.
# * `X-Cache-Varnish: HIT|MISS` and `X-Cache-Varnish-Hits` tell what happened.

vcl 4.1;

import std;

backend imgorigin {
    .host = "127.0.0.1";
    .port = "8080";
    .connect_timeout = 2s;
    .first_byte_timeout = 60s;   # a cold AVIF render of a large image takes a while
    .between_bytes_timeout = 10s;
}

acl purgers {
    "127.0.0.1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "PURGE not allowed"));
        }
        return (purge);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (synth(405, "Method not allowed"));
    }
    if (req.url ~ "^/health/?$") {
        return (pass);   # liveness must reach the origin; it is not an image
    }

    # imgorigin ignores the query string: drop it so it cannot split (or bust) the cache
    set req.url = regsub(req.url, "\?.*$", "");
    unset req.http.Cookie;
    unset req.http.Authorization;

    # The formats imgorigin negotiates from Accept are AVIF and WebP (no JPEG XL, no HEIC), so every
    # browser falls into one of four buckets. Keep this in step with IMGORIGIN_AUTO_AVIF/_AUTO_WEBP.
    if (req.http.Accept ~ "image/avif" && req.http.Accept ~ "image/webp") {
        set req.http.Accept = "image/avif,image/webp";
    } elsif (req.http.Accept ~ "image/avif") {
        set req.http.Accept = "image/avif";
    } elsif (req.http.Accept ~ "image/webp") {
        set req.http.Accept = "image/webp";
    } else {
        set req.http.Accept = "";
    }
    # Client hints (IMGORIGIN_ENABLE_CLIENT_HINTS) would need the same treatment; unset them when off.
    unset req.http.Sec-CH-DPR;
    unset req.http.DPR;
    unset req.http.Sec-CH-Width;
    unset req.http.Width;

    return (hash);   # never pass an image: a pass would skip request collapsing
}

sub vcl_hash {
    # The signed path is the whole identity of an image (Host does not matter to imgorigin); the
    # format variant is handled by Vary: Accept against the normalised Accept above.
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    unset beresp.http.Set-Cookie;

    if (beresp.status >= 500 && bereq.is_bgfetch) {
        return (abandon);   # keep serving the stale copy while the origin is failing
    }
    if (beresp.status >= 400) {
        # Never cache an error. imgorigin marks them `no-store` anyway; this makes it explicit.
        # A short-lived hit-for-miss marker (not ttl 0) lets the next requests go to the origin in
        # parallel instead of queueing behind each other on the waiting list.
        set beresp.ttl = 5s;
        set beresp.grace = 0s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    if (beresp.http.Cache-Control ~ "(?i)no-store|no-cache|private") {
        set beresp.ttl = 5s;
        set beresp.uncacheable = true;
        return (deliver);
    }

    # TTL comes from Cache-Control: max-age (Varnish reads it). Grace from stale-while-revalidate:
    if (beresp.http.Cache-Control ~ "stale-while-revalidate=[0-9]+") {
        set beresp.grace = std.duration(
            regsub(beresp.http.Cache-Control, "^.*stale-while-revalidate=([0-9]+).*$", "\1") + "s", 0s);
    } else {
        set beresp.grace = 10s;
    }
    # Keep expired copies a while longer for conditional (If-None-Match) refreshes from the origin.
    set beresp.keep = 1d;
    return (deliver);
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache-Varnish = "HIT";
    } else {
        set resp.http.X-Cache-Varnish = "MISS";
    }
    set resp.http.X-Cache-Varnish-Hits = obj.hits;
    # Downstream caches (browsers, other proxies) must still vary on Accept: imgorigin's Vary stays.
}

sub vcl_synth {
    set resp.http.Cache-Control = "no-store";
    if (resp.status == 405) {
        set resp.http.Allow = "GET, HEAD";
    }
}
