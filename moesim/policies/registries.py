"""The registries of the pluggable families (kept apart from the plug-ins to avoid import cycles)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from moesim.policies.registry import Registry

if TYPE_CHECKING:
    from moesim.policies.caches.base import CachePolicy
    from moesim.policies.miss.base import MissHandler
    from moesim.policies.predictors.base import Predictor

CACHES: Registry[CachePolicy] = Registry(
    "cache policy", "cache.policy", "moesim.policies.caches", "moesim.caches"
)
PREDICTORS: Registry[Predictor] = Registry(
    "predictor", "predictor.name", "moesim.policies.predictors", "moesim.predictors"
)
MISS_HANDLERS: Registry[MissHandler] = Registry(
    "miss handler", "miss.policy", "moesim.policies.miss", "moesim.miss"
)


@dataclass(frozen=True)
class Registries:
    """The plug-in families a scenario is validated against (tests may pass their own)."""

    predictors: Registry[Predictor]
    caches: Registry[CachePolicy]
    miss: Registry[MissHandler]


DEFAULT = Registries(PREDICTORS, CACHES, MISS_HANDLERS)
