"""Compute device choice, mixed precision and out-of-memory detection."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from enum import StrEnum

import torch

from ratcli.errors import UsageError

__all__ = ["DeviceChoice", "Precision", "resolve_device", "autocast_dtype", "autocast",
           "is_out_of_memory", "free_memory", "configure_threads", "default_threads"]


class DeviceChoice(StrEnum):
    """`--device` values."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(StrEnum):
    """Arithmetic for the forward pass: auto = bf16 (or fp16) on GPU, fp32 on CPU."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


def resolve_device(choice: str | DeviceChoice = DeviceChoice.AUTO, *,
                   local_rank: int | None = None) -> torch.device:
    """auto -> cuda if present, else mps, else cpu. An explicit device that is not
    available raises UsageError (so the CLI exits 2 with one line).

    local_rank: this process's rank on its node (torchrun's LOCAL_RANK): a CUDA device
    is then cuda:local_rank (modulo the GPUs visible), one GPU per process."""
    device = _resolve(choice)
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)  # for code that asks for plain "cuda"
    return device


def _resolve(choice: str | DeviceChoice) -> torch.device:
    try:
        choice = DeviceChoice(choice)
    except ValueError:
        names = ", ".join(c.value for c in DeviceChoice)
        raise UsageError(f"--device {choice}: choose one of {names}") from None
    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if choice is DeviceChoice.AUTO:
        return torch.device("cuda" if has_cuda else "mps" if has_mps else "cpu")
    if choice is DeviceChoice.CUDA and not has_cuda:
        raise UsageError("--device cuda: no CUDA GPU is available to torch on this machine")
    if choice is DeviceChoice.MPS and not has_mps:
        raise UsageError("--device mps: Apple MPS is not available on this machine")
    return torch.device(choice.value)


def autocast_dtype(device: torch.device, precision: str | Precision = Precision.AUTO
                   ) -> torch.dtype | None:
    """The autocast dtype for `device`, or None for plain fp32.

    auto: bf16 on CUDA GPUs that support it, else fp16 on CUDA/MPS; fp32 on CPU (CPU
    half precision is slower than fp32 for convolutions)."""
    precision = Precision(precision)
    if precision is Precision.FP32:
        return None
    if precision is Precision.FP16:
        return torch.float16
    if precision is Precision.BF16:
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """torch.autocast for `dtype`, or nothing when dtype is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device allocation failure (CUDA, MPS or CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text
    )


def free_memory(device: torch.device) -> None:
    """Return cached blocks to the driver after an OOM so a smaller retry can fit."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def configure_threads(threads: int | None = None) -> int:
    """Set the CPU threads of the forward pass (torch intra-op threads); returns the count.

    The rule, first match wins:
    1. `threads` (the CLI's `--threads N`), when given;
    2. the environment variable OMP_NUM_THREADS, when it is a positive integer (so
       `OMP_NUM_THREADS=1 rat ...` keeps one core for each of several parallel jobs);
    3. every CPU this process may run on (`default_threads()`).
    Raises UsageError for `threads` < 1. Affects the whole process (torch is global).
    """
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    n = threads or _env_threads() or default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def default_threads() -> int:
    """CPUs available to this process: its affinity mask (cgroups, taskset) where the OS
    has one, else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _env_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
