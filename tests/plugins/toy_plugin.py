"""The tiny third-party plug-in package the entry-point tests build and install (its source is
also the worked example of docs/plugins.md)."""

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "moesim-toy-plugin"
version = "0.1.0"

[tool.setuptools]
py-modules = ["moesim_toy"]

[project.entry-points."moesim.caches"]
toy-mru = "moesim_toy:MRU"

[project.entry-points."moesim.predictors"]
toy-same-ids = "moesim_toy:SameIds"

[project.entry-points."moesim.miss"]
toy-broken = "moesim_toy_missing_module:Nothing"
"""

MODULE = '''\
"""A most-recently-used cache and a trivial predictor, registered through entry points."""

from collections import OrderedDict

from moesim.policies.caches.base import CachePolicy
from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors.base import Predictor


class MRU(CachePolicy):
    """Evicts the most recently used expert (keeping ``spare`` of the newest)."""

    name = "toy-mru"
    params = ParamSchema(spare=Param(0, "int", lo=0, doc="newest residents never evicted"))

    def __init__(self, capacity, ctx):
        super().__init__(capacity, ctx)
        self.spare = self.param("spare")
        self._order = OrderedDict()  # oldest first

    def __contains__(self, key):
        return key in self._order

    def __len__(self):
        return len(self._order)

    def on_hit(self, key, pos):
        self._order.move_to_end(key)

    def admit(self, key, pos, prefetch, score=None):
        self._order[key] = None

    def victim(self, pinned):
        skipped = 0
        for key in reversed(self._order):
            if key in pinned:
                continue
            if skipped < self.spare:
                skipped += 1
                continue
            return key
        return next((k for k in reversed(self._order) if k not in pinned), None)

    def evict(self, key):
        del self._order[key]


class SameIds(Predictor):
    """Guesses that the layer ``horizon`` steps ahead picks the same expert ids as this one."""

    name = "toy-same-ids"

    def observe(self, s, keys):
        self._last = [k % self.E for k in keys]

    def predict(self, s):
        target = s + self.h
        layer = target % self.L
        return [(target, [layer * self.E + e for e in self._last], None)]
'''
