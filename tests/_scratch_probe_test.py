from test_hostile import canary, hs, raw_upstream, local_root, tight, geometry  # noqa: F401
import test_hostile as H


def test_probe(hs, canary, upstream, tight) -> None:
    rows = []
    for target, loc in H.REDIRECT_TARGETS.items():
        location = loc.format(c=canary.port, u=upstream.port)
        url = H.redirect(upstream, "probe-" + target, location, 302)
        r = H.fetch(hs, H.signed(f"/w:10/plain/{url}"))
        rows.append((target, r.status, r.text, len(canary.connections)))
    for s in H.NON_HTTP_SOURCES:
        s = s.format(c=canary.port)
        r = H.fetch(hs, H.signed(f"/w:10/plain/{s}"))
        r2 = H.fetch(hs, H.signed(f"/w:10/{H.b64(H.unquote(s))}"))
        rows.append((s[:40], r.status, r.text, r2.status, r2.text, len(canary.connections)))
    for r in rows: print(r)
    print(canary.connections)
