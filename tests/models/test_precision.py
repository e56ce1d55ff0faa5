"""Expert formats: bytes per expert by hand for Mixtral-8x7B (H = 4096, I = 14336)."""

from __future__ import annotations

import pytest

from moesim.errors import MoesimInputError
from moesim.models import get_model
from moesim.models.precision import FORMATS, HqqConfig, expert_bytes, get_format, use_more_bits
from moesim.models.spec import DTYPE_BYTES

N = 4096 * 14336  # 58,720,256 weights per expert matrix


@pytest.fixture
def mixtral():
    return get_model("mixtral-8x7b")


def test_plain_formats(mixtral) -> None:
    assert mixtral.expert_matrix_params == 3 * N
    assert expert_bytes(mixtral, "bf16") == mixtral.expert_bytes == 352_321_536
    assert expert_bytes(mixtral, "fp8") == 3 * N  # 176,160,768
    assert expert_bytes(mixtral, "int4") == 3 * N // 2
    for key in ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "mxfp4"):  # agrees with ModelSpec's table
        assert get_format(key).bits == DTYPE_BYTES[key] * 8


def test_hqq_2bit_mixtral_offloading_config(mixtral) -> None:
    # Per matrix: codes N/4 = 14,680,064; groups N/16 = 3,670,016; 8-bit scales 3,670,016 plus an
    # fp16 scale+zero (4 B) per 128 scales: 4 x 28,672 = 114,688; 8-bit zeros 3,670,016 plus 4 B.
    per_matrix = 14_680_064 + 3_670_016 + 114_688 + 3_670_016 + 4
    assert per_matrix == 22_134_788
    assert expert_bytes(mixtral, "hqq2") == 3 * per_matrix == 66_404_364
    assert get_format("hqq2").bits_per_weight(mixtral) == pytest.approx(8 * per_matrix / N)  # 3.0156


def test_hqq_3bit_packs_ten_codes_per_word(mixtral) -> None:
    # Codes: ceil(N / 10) = 5,872,026 int32 words = 23,488,104 B; groups N/64 = 917,504;
    # scale meta 4 x ceil(917,504 / 128) = 28,672.
    per_matrix = 23_488_104 + 917_504 + 28_672 + 917_504 + 4
    assert expert_bytes(mixtral, "hqq3") == 3 * per_matrix == 76_055_364


def test_hqq_4bit_and_unquantised_meta() -> None:
    # 4-bit g64, scale group 256 (the paper's attention config) on 65,536 weights:
    # codes 32,768; groups 1,024; scales 1,024 + 4 x 4; zeros 1,024 + 4.
    assert HqqConfig(4, 64, 256).matrix_bytes(65_536) == 32_768 + 1_024 + 16 + 1_024 + 4
    # fp16 scales and zeros when not re-quantised: 2 B each per group.
    assert (
        HqqConfig(4, 64, quant_scale=False, quant_zero=False).matrix_bytes(65_536) == 32_768 + 2_048 + 2_048
    )
    with pytest.raises(MoesimInputError, match="HQQ nbits"):
        HqqConfig(5, 64).matrix_bytes(640)


def test_gguf_q4_k_m(mixtral) -> None:
    assert [i for i in range(32) if use_more_bits(i, 32)] == [
        0,
        1,
        2,
        3,
        6,
        9,
        12,
        15,
        18,
        21,
        24,
        27,
        28,
        29,
        30,
        31,
    ]
    blocks = N // 256  # 229,376 super-blocks per matrix
    q4k, q6k = blocks * 144, blocks * 210
    fmt = get_format("gguf-q4_k_m")
    assert fmt.layer_bytes(mixtral, 0) == 2 * q4k + q6k == 114_229_248  # down in Q6_K
    assert fmt.layer_bytes(mixtral, 4) == 3 * q4k == 99_090_432  # down in Q4_K
    # 16 of the 32 layers take Q6_K: mean = (114,229,248 + 99,090,432) / 2.
    assert fmt.bytes_per_expert(mixtral) == 106_659_840
    assert fmt.bits_per_weight(mixtral) == pytest.approx((2 * 4.5 + (4.5 + 6.5625) / 2) / 3)  # 4.84375


def test_dequant_cost_hook(mixtral) -> None:
    bf16 = get_format("bf16").dequant(mixtral)
    assert (bf16.flops, bf16.bytes_fused, bf16.bytes_unfused) == (0.0, 2.0, 2.0)
    int8 = get_format("int8").dequant(mixtral)
    assert (int8.flops, int8.bytes_fused, int8.bytes_unfused) == (1.0, 1.0, 5.0)
    h2 = get_format("hqq2").dequant(mixtral)
    assert h2.flops == 2 + 4 / 16  # subtract zero, multiply scale; scale/zero dequant per group of 16
    assert h2.bytes_fused == pytest.approx(22_134_788 / N)
    assert h2.bytes_unfused == pytest.approx(22_134_788 / N + 4)


def test_unknown_format_is_one_clear_error(mixtral) -> None:
    with pytest.raises(MoesimInputError, match="model.expert_dtype 'q4_0' is not a known expert format"):
        expert_bytes(mixtral, "q4_0")
    assert get_format("HQQ2") is FORMATS["hqq2"]
