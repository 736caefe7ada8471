"""A tiny Django app: ``{% load imgorigin %}`` gives ``imgorigin_url`` and ``imgorigin_srcset``.

Settings::

    INSTALLED_APPS = [..., "imgorigin_django"]
    IMGORIGIN = {"BASE_URL": "https://img.example", "KEY": "<hex>", "SALT": "<hex>"}
    # optional: "SIGNATURE_SIZE": 32, "ENCODE": False, "PRESETS": ["base"]
"""
