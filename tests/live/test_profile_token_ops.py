"""``moesim profile`` measures the whole token's ops (embedding, dense MLP, LM head, sampling) so a
measured profile can run with ``runtime.whole_token``."""

from __future__ import annotations

from dataclasses import replace

from moesim.hardware.ops import REQUIRED_PROVENANCE
from moesim.hardware.runtime import TOKEN_OPS, with_token_ops
from moesim.profiling.profiler import Profiler, ProfileSettings
from moesim.profiling.token_ops import measure_token_ops
from tests.live.conftest import tiny_model

SMALL = dict(batches=(1, 2), contexts=(8,), tokens=(1, 4), repeats=3, warmup=1, keep_awake=False)


def test_token_ops_are_measured_and_fill_a_whole_token_run():
    base = tiny_model(name="live-tiny-token")
    # one dense layer before the MoE layers, as DeepSeek's first
    m = replace(
        base,
        num_layers=base.num_layers + 1,
        moe_layer_indices=tuple(i + 1 for i in base.moe_layer_indices),
        extra={"dense_intermediate_size": 48},
    )
    prof = Profiler(m, "cpu", ProfileSettings(**SMALL, ops=TOKEN_OPS, rotate_bytes=1 << 16))
    measure_token_ops(prof)  # Profiler.run calls it between compute and copies
    tables = {t.op: t for t in prof.tables}
    assert set(tables) == set(TOKEN_OPS)
    assert tables["sampling"].axes == ("batch",) and tables["lm_head"].axes == ("tokens",)
    for t in tables.values():
        assert all(v > 0 for v in t.ms)
        assert all(k in t.provenance for k in REQUIRED_PROVENANCE["measured"])
    profile = prof._profile()
    assert with_token_ops(profile, m, "measured.yaml") is profile  # nothing to fill, nothing refused


def test_models_without_dense_layers_get_no_dense_table():
    m = tiny_model(name="live-tiny-token2")
    prof = Profiler(m, "cpu", ProfileSettings(**SMALL, ops=("dense_ffn", "lm_head")))
    measure_token_ops(prof)
    assert [t.op for t in prof.tables] == ["lm_head"]
