"""Peer systems the harness starts: thumbor (own virtualenv) and nginx (Debian package)."""
