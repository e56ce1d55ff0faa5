"""Regenerate the synthetic traces the seed-claim scenarios replay (``scenarios/seed-claims/``):

- ``traces/deepseek-v2-lite-synth.moetrace``: DeepSeek-V2-Lite's shape (26 MoE layers, E=64, k=6),
  12 sequences x 128 decode tokens, 4 domains;
- ``traces/mixtral-8x7b-synth.moetrace``: Mixtral-8x7B's shape (32 MoE layers, E=8, k=2),
  8 sequences x 128 decode tokens.

Run from the repository root: ``python traces/make_seed_claims.py``. Deterministic (same moesim
version, same bytes). The structure parameters are synth's defaults, fitted to the real OLMoE decode
trace: these are traces *of the right shape*, not captures of those models. For Mixtral, the README
of ``scenarios/seed-claims/mixtral-pcie4-overlap`` also shows the command with the real shared trace.
"""

from __future__ import annotations

import sys
from pathlib import Path

from moesim.traces.native import save_trace
from moesim.traces.synth import synthesize

OUT_DIR = Path(__file__).resolve().parents[1] / "moesim" / "data" / "traces"  # shipped as package data

TRACES = {
    "deepseek-v2-lite-synth.moetrace": dict(
        num_sequences=12,
        tokens=128,
        num_layers=26,
        num_experts=64,
        top_k=6,
        seed=2002,
        model="deepseek-v2-lite",
    ),
    "mixtral-8x7b-synth.moetrace": dict(
        num_sequences=8, tokens=128, num_layers=32, num_experts=8, top_k=2, seed=8007, model="mixtral-8x7b"
    ),
}


def main(out_dir: Path = OUT_DIR) -> int:
    for name, p in TRACES.items():
        trace = synthesize(
            p["num_sequences"],
            p["tokens"],
            num_layers=p["num_layers"],
            num_experts=p["num_experts"],
            top_k=p["top_k"],
            seed=p["seed"],
            model=p["model"],
            source=(
                f"synthetic (not captured): `python traces/make_seed_claims.py` = moesim.traces.synth.synthesize("
                f"{p['num_sequences']} sequences x {p['tokens']} decode tokens, {p['num_layers']} layers, "
                f"E={p['num_experts']}, k={p['top_k']}, seed={p['seed']}, default structure parameters); "
                f"the shape of {p['model']}"
            ),
        )
        save_trace(trace, out_dir / name)
        print(f"wrote {out_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
