"""Resolve a profile reference (scenario ``hardware.profile``) to a ``LatencyProfile``.

References:
  ``paper:<v100-32gb|a100-40gb|a100-80gb>``  seed 002's DeepSeek-V2-Lite tables
  ``paper:<key>+estimated``                  the same, ops the paper lacks filled from the roofline
  ``estimated:<device>``                     roofline estimate for the given model (devices.yaml)
  anything else                              a path to a profile YAML file
"""

from __future__ import annotations

import os
from pathlib import Path

from moesim.errors import MoesimInputError
from moesim.hardware.devices import list_devices
from moesim.hardware.paper import PAPER_DEVICES, PAPER_MODEL, paper_profile
from moesim.hardware.profile import LatencyProfile
from moesim.hardware.profile_io import read_profile
from moesim.hardware.roofline import estimate_profile
from moesim.models.spec import ModelSpec

PAPER_REFS: tuple[str, ...] = tuple(f"paper:{k}" for k in PAPER_DEVICES)


def profile_refs() -> list[str]:
    """Every built-in reference (file paths aside)."""
    refs = list(PAPER_REFS) + [f"{r}+estimated" for r in PAPER_REFS]
    return refs + [f"estimated:{d}" for d in list_devices()]


def _forms() -> str:
    return (
        f"use paper:<{'|'.join(PAPER_DEVICES)}>[+estimated], estimated:<{'|'.join(list_devices())}>, "
        "or a path to a profile YAML file"
    )


def _is_paper_model(model: ModelSpec) -> bool:
    # The chat variant has identical shapes; anything else has different weights and kernels.
    return model.name.lower().startswith(PAPER_MODEL)


def load_profile(
    ref: str | os.PathLike, model: ModelSpec | None = None, *, extrapolation: str | None = None
) -> LatencyProfile:
    """The profile ``ref`` names, checked against ``model`` (required for ``estimated:``)."""
    text = os.fspath(ref)
    scheme, sep, rest = text.partition(":")
    if sep and scheme == "paper":
        profile = _paper(text, rest, model)
    elif sep and scheme == "estimated":
        if model is None:
            raise MoesimInputError(
                f"profile {text}: a roofline estimate needs the model; pass the model spec"
            )
        profile = estimate_profile(model, rest)
    else:
        path = Path(text)
        if not path.is_file():
            raise MoesimInputError(f"hardware.profile: {text!r}: no such file; {_forms()}")
        profile = read_profile(path)
        if model is not None and profile.model is not None and profile.model != model.name:
            raise MoesimInputError(
                f"{text}: profile is for model {profile.model!r} but the scenario's model is "
                f"{model.name!r}; use a profile measured for {model.name} or estimated:<device>"
            )
    if extrapolation is not None and extrapolation != profile.extrapolation:
        profile = profile.with_extrapolation(extrapolation)
    return profile


def _paper(text: str, rest: str, model: ModelSpec | None) -> LatencyProfile:
    key, plus, fill = rest.partition("+")
    if key not in PAPER_DEVICES or (plus and fill != "estimated"):
        raise MoesimInputError(f"hardware.profile: unknown profile {text!r}; {_forms()}")
    if model is not None and not _is_paper_model(model):
        raise MoesimInputError(
            f"profile {text} holds seed 002's measurements of {PAPER_MODEL} only, not {model.name!r}; "
            f"use estimated:<device> or a profile measured for {model.name}"
        )
    profile = paper_profile(key)
    if not plus:
        return profile
    if model is None:
        raise MoesimInputError(f"profile {text}: filling gaps from the roofline needs the model spec")
    estimate = estimate_profile(model, PAPER_DEVICES[key].roofline_device)
    return profile.filled_from(estimate, name=text)
