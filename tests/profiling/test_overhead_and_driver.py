"""Loop-overhead sampling keeps every token from a warm cache; the driver version's sources."""

from __future__ import annotations

import os
import stat

import pytest

from moesim.errors import MoesimInputError
from moesim.profiling import driver
from moesim.profiling.overhead import (
    MIN_STEPS,
    _check_enough,
    _cpu_residuals,
    _cuda_residuals,
    _overhead_run,
)
from moesim.profiling.profiler import Profiler, ProfileSettings
from tests.live.conftest import tiny_model


class _ZeroProfile:
    """Every kernel predicted at 0 ms: the residuals are the measured times themselves."""

    def time_ms(self, op, **axes) -> float:
        return 0.0

    def has(self, op) -> bool:
        return False


@pytest.mark.parametrize("batch", [1, 2])
def test_many_expert_model_keeps_every_token_after_the_first(batch):
    # 64 experts, top-6 (DeepSeek-V2-Lite's routing): from a cold cache almost no token of a short
    # decode is all-hit, so the CUDA residuals had 0-1 samples; preloaded, all but token 0 count.
    L, tokens = 2, 6
    m = tiny_model(L=L, E=64, k=6, name="live-many-experts")
    s = ProfileSettings(overhead_tokens=tokens, keep_awake=False, batches=(batch,), contexts=(8,))
    prof = Profiler(m, "cpu", s)
    ex, stats = _overhead_run(prof, m, L, batch, 8)
    assert all(not r.misses for r in ex.steps)
    pre, post = _cuda_residuals(ex, stats, _ZeroProfile(), L)
    assert len(pre) == tokens - 1 and len(post) == tokens - 1
    cpu_pre, _ = _cpu_residuals(ex, _ZeroProfile())
    assert len(cpu_pre) >= MIN_STEPS


def test_too_few_samples_fail_in_one_line():
    _check_enough(MIN_STEPS, 1, 2, 6, True)
    with pytest.raises(MoesimInputError, match="loop overhead at batch 4: only 1 usable all-hit tokens") as e:
        _check_enough(1, 4, 8, 24, True)
    assert "\n" not in str(e.value) and "overhead_tokens" in str(e.value)


def test_driver_sources_are_asked_in_order():
    asked: list[str] = []

    def src(name, value):
        def f():
            asked.append(name)
            return value

        return f

    assert (
        driver.driver_version((src("nvml", None), src("smi", "550.54.15"), src("proc", "x"))) == "550.54.15"
    )
    assert asked == ["nvml", "smi"]
    assert driver.driver_version((src("a", None),)) is None


def test_driver_from_nvidia_smi_and_proc(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '560.35.03'\necho '560.35.03'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert driver._from_smi() == "560.35.03"
    proc = tmp_path / "version"
    proc.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
    )
    assert driver._from_proc(str(proc)) == "550.54.15"
    assert driver._from_proc(str(tmp_path / "absent")) is None
