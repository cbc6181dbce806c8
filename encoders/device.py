"""Torch device selection shared by all encoders."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily so `import encoders` stays cheap
    import torch

_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a user-facing device spec into a ``torch.device``.

    ``"auto"`` (or ``None``) picks CUDA when available and CPU otherwise. Explicit
    specs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) are validated up front so a
    bad choice fails here with a clear message rather than deep inside a forward pass.
    """
    import torch

    if device is None:
        device = "auto"
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a str, torch.device or None, got {type(device).__name__}")
    spec = device.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    match = _DEVICE_RE.match(spec)
    if match is None:
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise ValueError(f"unknown device {device!r}; CPU takes no index")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
        n = torch.cuda.device_count()
        if index is not None and int(index) >= n:
            raise RuntimeError(f"device {device!r} requested but only {n} CUDA device(s) are visible")
        return torch.device("cuda" if index is None else f"cuda:{index}")
    # mps
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise RuntimeError(f"device {device!r} requested but MPS is not available")
    return torch.device("mps")


@lru_cache(maxsize=1)
def available_cpus() -> int:
    """CPUs this process may actually use (affinity mask and cgroup v2 quota)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)
