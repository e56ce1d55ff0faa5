"""The NVIDIA driver version for a measured profile's provenance.

Asked in order of trust: NVML (``pynvml``, when installed), then ``nvidia-smi``, then
``/proc/driver/nvidia/version`` (Linux with the proprietary kernel module only). ``torch.cuda`` only
knows the CUDA driver *API* version, which is not the driver release. ``None`` when none answers.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

PROC_VERSION = "/proc/driver/nvidia/version"


def _from_nvml() -> str | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - any NVML failure means "ask the next source"
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def _from_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()
    return first[0].strip() if first and first[0].strip() else None


def _from_proc(path: str = PROC_VERSION) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except OSError:
        return None
    parts = first.split("Kernel Module")
    return parts[1].split()[0] if len(parts) > 1 and parts[1].split() else (first.strip() or None)


SOURCES: tuple[Callable[[], str | None], ...] = (_from_nvml, _from_smi, _from_proc)


def driver_version(sources: tuple[Callable[[], str | None], ...] | None = None) -> str | None:
    for source in sources or SOURCES:
        v = source()
        if v:
            return v
    return None
