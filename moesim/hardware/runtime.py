"""What a serving runtime adds to the kernels: host time, and the parts of a token that are not MoE
layers (scenario section ``runtime``; docs/fidelity.md "Timing model").

``RuntimeCosts`` is what the cost model and the simulator read: per-layer and per-token host time,
a host issue time per kernel, and whether the whole token (embedding, dense layers, LM head,
sampling) is timed. ``runtime_costs`` resolves a scenario's ``runtime`` keys against the named
presets of ``data/runtime_presets.yaml`` (explicit keys win). With the default (preset ``none``,
no keys, ``whole_token: false``) every field is zero or false and the simulator runs exactly as
before issue 13.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from moesim.errors import MoesimInputError

PRESETS_FILE = "moesim/hardware/data/runtime_presets.yaml"
PRESET_KEYS = ("layer_overhead_us", "token_overhead_us", "launch_us")

# Ops a whole token adds around the MoE layers (profile tables; the roofline estimates them).
TOKEN_OPS: tuple[str, ...] = ("embedding", "dense_ffn", "lm_head", "sampling")


@dataclass(frozen=True)
class RuntimeCosts:
    """Resolved runtime costs, in milliseconds (the simulator's unit)."""

    layer_overhead_ms: float = 0.0
    token_overhead_ms: float = 0.0
    launch_ms: float = 0.0
    whole_token: bool = False
    preset: str = "none"

    @property
    def host_time(self) -> bool:
        """Whether these costs alone put ops on a host timeline (a profile's host tables also do)."""
        return self.layer_overhead_ms > 0 or self.token_overhead_ms > 0 or self.launch_ms > 0


@lru_cache(maxsize=1)
def presets() -> dict[str, dict[str, Any]]:
    """Every preset by name, as in the data file (values in microseconds, with sources)."""
    text = (
        resources.files("moesim.hardware").joinpath("data/runtime_presets.yaml").read_text(encoding="utf-8")
    )
    data = yaml.safe_load(text)
    out = data.get("presets") if isinstance(data, dict) else None
    if not isinstance(out, dict) or "none" not in out:
        raise MoesimInputError(
            f"{PRESETS_FILE}: needs a 'presets' mapping with at least 'none'; reinstall moesim"
        )
    for name, p in out.items():
        missing = [k for k in (*PRESET_KEYS, "sources") if k not in p]
        if missing:
            raise MoesimInputError(f"{PRESETS_FILE}: preset {name} lacks {', '.join(missing)}")
    return out


def preset_names() -> tuple[str, ...]:
    return tuple(presets())


def runtime_costs(
    preset: str = "none",
    layer_overhead_us: float | None = None,
    token_overhead_us: float | None = None,
    launch_us: float | None = None,
    whole_token: bool = False,
) -> RuntimeCosts:
    """The preset's values with each explicit key (not None) in its place."""
    table = presets()
    if preset not in table:
        raise MoesimInputError(
            f"runtime.preset: unknown preset {preset!r}; choose one of: {', '.join(table)}"
        )
    p = table[preset]
    given = {
        "layer_overhead_us": layer_overhead_us,
        "token_overhead_us": token_overhead_us,
        "launch_us": launch_us,
    }
    us = {k: float(p[k]) if given[k] is None else float(given[k]) for k in PRESET_KEYS}  # type: ignore[arg-type]
    return RuntimeCosts(
        layer_overhead_ms=us["layer_overhead_us"] / 1e3,
        token_overhead_ms=us["token_overhead_us"] / 1e3,
        launch_ms=us["launch_us"] / 1e3,
        whole_token=whole_token,
        preset=preset,
    )


def from_config(cfg: Any) -> RuntimeCosts:
    """``runtime_costs`` of a scenario's ``runtime`` section (or None: the default)."""
    if cfg is None:
        return RuntimeCosts()
    return runtime_costs(
        cfg.preset, cfg.layer_overhead_us, cfg.token_overhead_us, cfg.launch_us, cfg.whole_token
    )


def with_token_ops(profile: Any, model: Any, ref: str) -> Any:
    """``profile`` with roofline tables for the whole-token ops it lacks, when ``ref`` names an
    estimated profile (``estimated:<device>``, ``paper:<gpu>+estimated``); a measured or paper-only
    profile lacking one is refused, naming the ops."""
    from moesim.hardware.paper import PAPER_DEVICES
    from moesim.hardware.roofline import token_tables

    missing = [op for op in TOKEN_OPS if not profile.has(op)]
    if not missing:
        return profile
    scheme, _, rest = ref.partition(":")
    device = None
    if scheme == "estimated":
        device = rest
    elif scheme == "paper" and rest.endswith("+estimated"):
        device = PAPER_DEVICES[rest.partition("+")[0]].roofline_device
    if device is None:
        raise MoesimInputError(
            f"runtime.whole_token: profile {profile.name} has no {', '.join(missing)} table(s); add them "
            "to the profile, use an estimated profile (estimated:<device> or paper:<gpu>+estimated), "
            "or set runtime.whole_token=false"
        )
    tables = [t for t in token_tables(model, device) if t.op in missing]
    return profile.with_tables(tables)
