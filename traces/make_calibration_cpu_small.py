"""Regenerate ``traces/calibration-cpu-small.moetrace``: the small synthetic routing trace that
``scenarios/calibration-cpu-small.yaml`` replays to calibrate the live executor on a CPU.

Shape of ``traces/calibration-cpu-small.config.json`` (4 MoE layers, E=16, k=2); 8 sequences of 32
decode tokens over two domains. Deterministic: the same seed gives a byte-identical trace.

    python traces/make_calibration_cpu_small.py
"""

from __future__ import annotations

from pathlib import Path

from moesim.traces import save_trace
from moesim.traces.synth import synthesize

OUT_DIR = Path(__file__).resolve().parents[1] / "moesim" / "data" / "traces"  # shipped as package data


def main() -> None:
    trace = synthesize(
        num_sequences=8,
        tokens_per_sequence=32,
        num_layers=4,
        num_experts=16,
        top_k=2,
        seed=2024,
        domains=("general", "coding"),
        model="moesim-small-cpu",
        source="synthetic: traces/make_calibration_cpu_small.py (moesim.traces.synth, seed 2024)",
    )
    out = save_trace(trace, OUT_DIR / "calibration-cpu-small.moetrace")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
