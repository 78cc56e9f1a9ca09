"""Checkpoint conversion between the families' official layouts and the package's own layout."""

from .official_layouts import OFFICIAL_LAYOUT_TRANSFORMS

__all__ = ["OFFICIAL_LAYOUT_TRANSFORMS"]
