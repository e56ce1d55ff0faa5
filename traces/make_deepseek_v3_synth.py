"""Regenerate ``traces/deepseek-v3-synth.moetrace``: a small synthetic trace of DeepSeek-V3's shape
(58 MoE layers, E=256, k=8) for the tiered-memory scenario ``scenarios/deepseek-v3-h100-nvme.yaml``.

Run from the repository root: ``python traces/make_deepseek_v3_synth.py``. Deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

from moesim.traces.native import save_trace
from moesim.traces.synth import synthesize

OUT = (
    Path(__file__).resolve().parents[1] / "moesim" / "data" / "traces" / "deepseek-v3-synth.moetrace"
)  # package data
SEED = 3


def main(out: Path = OUT) -> int:
    trace = synthesize(
        4,
        48,
        num_layers=58,
        num_experts=256,
        top_k=8,
        seed=SEED,
        domains=("general",),
        prefill_tokens=64,
        model="deepseek-v3",
        source=(
            f"synthetic (not captured): `python traces/make_deepseek_v3_synth.py` = moesim.traces.synth.synthesize("
            f"4 sequences x 48 decode tokens, 64 prompt tokens, 58 layers, E=256, k=8, seed={SEED})"
        ),
    )
    save_trace(trace, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
