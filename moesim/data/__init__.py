"""Data shipped inside the package (so that an installed moesim runs from any directory): the
built-in and seed-claim scenarios, the synthetic traces and model configs they replay, and the CPU
calibration profile. Paths inside a shipped scenario are relative to the scenario file."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SCENARIOS_DIR = DATA_DIR / "scenarios"
DEFAULT_SCENARIO = SCENARIOS_DIR / "default.yaml"


def shipped_scenario(name: str | Path) -> Path | None:
    """The shipped scenario a name denotes, or None. ``default``, ``seed-claims/st-moe-accuracy``,
    ``seed-claims/st-moe-accuracy/scenario.yaml`` and ``scenarios/default.yaml`` (the repository
    path, from any directory) all work; a name never leaves the shipped scenarios folder."""
    text = str(name).replace("\\", "/").strip("/")
    if text.startswith("scenarios/"):
        text = text[len("scenarios/") :]
    if not text or Path(text).is_absolute() or ".." in text.split("/"):
        return None
    base = SCENARIOS_DIR / text
    for cand in (base, base.with_name(base.name + ".yaml"), base / "scenario.yaml"):
        if cand.is_file():
            return cand
    return None


def shipped_scenario_names() -> list[str]:
    """Every shipped scenario by its short name (for help texts and error messages)."""
    names = [p.stem for p in sorted(SCENARIOS_DIR.glob("*.yaml"))]
    names += [
        p.parent.relative_to(SCENARIOS_DIR).as_posix()
        for p in sorted(SCENARIOS_DIR.glob("*/*/scenario.yaml"))
    ]
    return names
