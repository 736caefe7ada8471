"""The app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class ImgoriginConfig(AppConfig):
    """imgorigin template tags; no models."""

    name = "imgorigin_django"
    verbose_name = "imgorigin"
