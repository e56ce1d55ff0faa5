"""Moved to ``moesim.hardware.costs``; this alias keeps branches written against the old path
importable until they are merged (nothing in the tree imports it)."""

from moesim.hardware.costs import CostModel

__all__ = ["CostModel"]
