"""Measurement primitives: wall-clock medians, peak resident memory, and memory read bandwidth.

torch's CPU allocator keeps no peak counter, and the process's resident size hides short-lived tensors (freed
blocks are reused or returned between samples). CPU peak memory is therefore taken from the profiler's allocation
records: every allocation and free of the measured block, in order, summed into a running total whose maximum is
the peak growth. CUDA uses torch's own counters.
"""

import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


@dataclass
class PeakMemory:
    baseline: int = 0
    peak: int = 0

    @property
    def delta(self) -> int:
        return max(0, self.peak - self.baseline)


@contextmanager
def track_peak_memory(device: str = "cpu"):
    """Yields a PeakMemory whose `delta` is the peak growth of allocated tensor memory during the block."""
    result = PeakMemory()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result.baseline = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result.peak = torch.cuda.max_memory_allocated()
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield result
    allocations = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    )
    running = 0
    for _, nbytes in allocations:
        running += nbytes
        result.peak = max(result.peak, running)


def median_seconds(fn, repeats: int = 3, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidths(gigabytes: float = 2.0, repeats: int = 5) -> dict[str, float]:
    """Bytes/s at which this process streams a buffer far larger than the caches, per kernel (best of `repeats`):
    a float32 sum, a dot product of the buffer's two halves, and a matrix-vector product over it (the decode
    kernel). Kernels differ by 20-30% on the same machine (a single sum underestimates what a decode step reaches),
    so a ceiling should take the fastest."""
    buffer = torch.ones(int(gigabytes * 1e9) // (4 * 4096) * 4096, dtype=torch.float32)
    halves = buffer.view(2, -1)
    matrix, vector = buffer.view(-1, 4096), torch.ones(4096)
    kernels = {
        "sum": lambda: buffer.sum(),
        "dot": lambda: torch.dot(halves[0], halves[1]),
        "matrix-vector": lambda: torch.mv(matrix, vector),
    }
    size = buffer.numel() * 4
    rates = {name: size / min(median_seconds(fn, repeats=1, warmup=0) for _ in range(repeats))
             for name, fn in kernels.items()}
    buffer = halves = matrix = None  # frees the buffer now (the kernels share these variables)
    return rates


def read_bandwidth_bytes_per_second(gigabytes: float = 2.0, repeats: int = 5) -> float:
    """The fastest of `read_bandwidths`: the read rate a bandwidth-bound kernel can reach on this machine now."""
    return max(read_bandwidths(gigabytes, repeats).values())


def last_level_cache_bytes() -> int | None:
    """Size of CPU 0's largest cache (Linux sysfs), or None where it cannot be read."""
    sizes = []
    root = "/sys/devices/system/cpu/cpu0/cache"
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    try:
        for index in os.listdir(root):
            if not index.startswith("index"):
                continue
            with open(os.path.join(root, index, "size")) as f:
                text = f.read().strip().upper()
            sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    except (OSError, ValueError):
        return None
    return max(sizes) if sizes else None


# /proc/cpuinfo flags that decide which CPU kernels a decode step can use (oneDNN, fbgemm, torch's int4/int8 and
# ggml all dispatch on them at run time)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16", "amx_int8")


def cpu_isa_flags() -> dict[str, bool]:
    """Which of ISA_FLAGS CPU 0 reports (Linux /proc/cpuinfo; all False where it cannot be read)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {flag: flag in flags for flag in ISA_FLAGS}


def machine_description() -> dict:
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": platform.processor() or "unknown",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "last_level_cache_MiB": (last_level_cache_bytes() or 0) // 2**20 or None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info
