"""Validation against published measurements: the catalog of measured decode speeds (issue 13)."""

from moesim.validation.catalog import PublishedCase, PublishedSource, load_catalog

__all__ = ["PublishedCase", "PublishedSource", "load_catalog"]
