"""Regenerate ``traces/default.moetrace``: the synthetic OLMoE-shaped trace the default scenario replays.

Run from the repository root: ``python traces/make_default.py``. Deterministic: the same moesim
version writes byte-identical arrays (check with ``moesim trace info traces/default.moetrace --digest``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from moesim.traces.native import save_trace
from moesim.traces.synth import synthesize
from moesim.traces.trace import Trace

OUT = Path(__file__).resolve().parents[1] / "moesim" / "data" / "traces" / "default.moetrace"  # package data
SEED = 20240924
SEQUENCES = 16
TOKENS = 128


def build() -> Trace:
    return synthesize(
        SEQUENCES,
        TOKENS,
        num_layers=16,
        num_experts=64,
        top_k=8,
        seed=SEED,
        domains=("general", "coding", "math", "reasoning"),
        model="olmoe-1b-7b",
        source=(
            f"synthetic (not captured): `python traces/make_default.py` = moesim.traces.synth.synthesize("
            f"{SEQUENCES} sequences x {TOKENS} decode tokens, 16 layers, E=64, k=8, seed={SEED}, default "
            "structure parameters fitted to the real OLMoE-1B-7B decode trace); 4 domains x 4 sequences"
        ),
    )


def main(out: Path = OUT) -> int:
    save_trace(build(), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
