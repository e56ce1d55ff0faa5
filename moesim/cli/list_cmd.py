"""``moesim list [plugins|models|devices|profiles]``: what a scenario can name."""

from __future__ import annotations

import argparse

KINDS = ("plugins", "models", "devices", "profiles")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="show registered plug-ins, models, devices and profiles",
        description="Show every registered plug-in (predictors, cache policies, miss handlers; built in or "
        "from an installed package's entry point), catalog model, device and built-in profile.",
    )
    p.add_argument("kind", nargs="?", choices=KINDS, help="show only this kind (default: all)")
    p.set_defaults(func=run)


def plugin_lines() -> list[str]:
    from moesim.policies.params import describe
    from moesim.policies.registries import DEFAULT

    lines = []
    for title, reg in (
        ("predictors", DEFAULT.predictors),
        ("caches", DEFAULT.caches),
        ("miss", DEFAULT.miss),
    ):
        lines.append(f"{title} ({reg.scenario_key}; entry-point group {reg.group}):")
        for entry in reg.entries():
            lines.append(f"  {entry.name:<18} {entry.source}")
            lines.extend(f"      {text}" for text in describe(getattr(entry.cls, "params", {})))
        for name, why in sorted(reg.broken().items()):
            lines.append(f"  {name:<18} BROKEN: {why}")
    return lines


def model_lines() -> list[str]:
    from moesim.models.catalog import CATALOG

    lines = ["models (model.name):"]
    for s in CATALOG.values():
        lines.append(f"  {s.name:<22} {s.hf_id}  L={s.num_moe_layers} E={s.num_experts} k={s.top_k}")
    return lines


def device_lines() -> list[str]:
    from moesim.hardware.devices import get_device, list_devices

    lines = ["devices (hardware.profile=estimated:<device>):"]
    lines.extend(f"  {key:<14} {get_device(key).name}" for key in list_devices())
    return lines


def profile_lines() -> list[str]:
    from moesim.hardware.load import profile_refs

    lines = ["profiles (hardware.profile; or a path to a profile YAML):"]
    lines.extend(f"  {ref}" for ref in profile_refs())
    return lines


def run(args: argparse.Namespace) -> int:
    sections = {
        "plugins": plugin_lines,
        "models": model_lines,
        "devices": device_lines,
        "profiles": profile_lines,
    }
    kinds = [args.kind] if args.kind else list(KINDS)
    blocks = ["\n".join(sections[k]()) for k in kinds]
    print("\n\n".join(blocks))
    return 0
