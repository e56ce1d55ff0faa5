"""GPU memory check: breakdown by hand for Mixtral-8x7B and DeepSeek-V2-Lite."""

from __future__ import annotations

import dataclasses

import pytest

from moesim.errors import MoesimInputError
from moesim.hardware.memory import GIB, check_gpu_memory, dense_bytes, kv_cache_bytes
from moesim.models import get_model

# Mixtral-8x7B: H 4096, 32 layers (all MoE), 32 q / 8 kv heads of 128, vocab 32000, 8 experts.
ATTN_PARAMS = 4096 * 128 * (2 * 32 + 2 * 8)  # q, o: 4096x4096; k, v: 4096x1024 -> 41,943,040
DENSE_BF16 = 32 * ATTN_PARAMS * 2 + 32 * 2 * 4096 * 2 + 32 * 8 * 4096 * 2 + 2 * 32000 * 4096 * 2
KV_4096 = 4096 * 32 * (2 * 8 * 128) * 2  # 536,870,912 B = 0.5 GiB


@pytest.fixture
def mixtral():
    return get_model("mixtral-8x7b")


def test_mixtral_breakdown_by_hand(mixtral) -> None:
    d = dense_bytes(mixtral)
    assert d.attention == 2_684_354_560
    assert (d.norms, d.router, d.embedding, d.lm_head) == (524_288, 2_097_152, 262_144_000, 262_144_000)
    assert d.total == DENSE_BF16 == 3_211_264_000
    assert kv_cache_bytes(mixtral, 4096) == KV_4096
    c = check_gpu_memory(mixtral, expert_slots=8, context=4096, device="rtx-3060")
    assert c.expert_bytes == 8 * 352_321_536
    assert c.total_bytes == 3_211_264_000 + 536_870_912 + 2_818_572_288
    assert c.capacity_bytes == 12 * GIB and c.fits and c.headroom_bytes == 12 * GIB - c.total_bytes


def test_does_not_fit_one_clear_line_and_override(mixtral) -> None:
    c = check_gpu_memory(mixtral, expert_slots=32, context=4096, device="rtx-3060")
    assert c.total_bytes == DENSE_BF16 + KV_4096 + 32 * 352_321_536  # 13.99 GiB > 12
    assert not c.fits
    msg = c.message()
    assert "\n" not in msg and "13.99 GiB" in msg and "12.00 GiB (device rtx-3060)" in msg
    assert "hardware.memory_gb" in msg
    with pytest.raises(MoesimInputError, match="does not fit rtx-3060"):
        c.raise_if_over()
    big = check_gpu_memory(mixtral, expert_slots=32, context=4096, device="rtx-3060", memory_gb=16)
    assert big.fits and big.capacity_from == "memory_gb"
    big.raise_if_over()


def test_quantised_attention_and_experts(mixtral) -> None:
    # hqq4 attention (g64, scale group 256) per layer on 41,943,040 weights:
    # codes 20,971,520 + scales 655,360 + 4 x 2,560 + zeros 655,360 + 4 = 22,292,484.
    assert dense_bytes(mixtral, "hqq4").attention == 32 * 22_292_484
    c = check_gpu_memory(
        mixtral, expert_slots=2 * 32, context=4096, expert_dtype="hqq3", dense_dtype="hqq4", device="rtx-3060"
    )
    assert c.expert_bytes == 64 * 76_055_364 and c.fits


def test_mla_kv_dense_layers_and_shared_experts() -> None:
    m = get_model("deepseek-v2-lite")  # 27 layers, layer 0 dense (FFN 10944), MLA latent 512 + rope 64
    assert kv_cache_bytes(m, 1000) == 1000 * 27 * (512 + 64) * 2
    d = dense_bytes(m)
    assert d.dense_ffn == 3 * 2048 * 10944 * 2
    assert d.shared_experts == 26 * 3 * 2048 * 2816 * 2
    assert dense_bytes(m, tie_embeddings=True).lm_head == 0
    with pytest.raises(MoesimInputError, match="dense_intermediate_size"):
        dense_bytes(dataclasses.replace(m, extra={}))


def test_sliding_window_caps_the_kv_cache(mixtral) -> None:
    windowed = dataclasses.replace(
        mixtral, attention=dataclasses.replace(mixtral.attention, sliding_window=1024)
    )
    assert kv_cache_bytes(windowed, 4096) == KV_4096 // 4
    assert kv_cache_bytes(mixtral, 4096, batch=3, kv_bytes=1.0) == 3 * KV_4096 // 2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"expert_slots": -1, "context": 10, "device": "t4"}, "expert_slots"),
        ({"expert_slots": 1, "context": 0, "device": "t4"}, "context"),
        ({"expert_slots": 1, "context": 10}, "needs a device or hardware.memory_gb"),
        ({"expert_slots": 1, "context": 10, "memory_gb": 0}, "hardware.memory_gb must be a positive"),
        ({"expert_slots": 1, "context": 10, "device": "t4", "expert_dtype": "q9"}, "model.expert_dtype"),
    ],
)
def test_bad_inputs(mixtral, kwargs, needle) -> None:
    with pytest.raises(MoesimInputError, match=needle):
        check_gpu_memory(mixtral, **kwargs)


def test_reproduces_the_papers_unquantised_model_sizes(mixtral) -> None:
    """mixtral-offloading Table 1 (GiB): FP16 everywhere 86.99; 4-bit HQQ attention, FP16 experts 85.16."""
    experts = 32 * 8 * mixtral.expert_bytes
    assert round((dense_bytes(mixtral).total + experts) / GIB, 2) == 86.99
    assert round((dense_bytes(mixtral, "hqq4").total + experts) / GIB, 2) == 85.16
