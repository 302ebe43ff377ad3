"""What every benchmark section shares: the run's settings, timing, the device, the machine line and the output
(a Markdown table of rows, and the ratio keys as JSON)."""

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hesp_hf.atomic_files import write_text_atomic


@dataclass(frozen=True)
class Settings:
    """One run's options (`scripts/benchmark.py --help`)."""

    quick: bool = False
    workdir: Path = Path("outputs/benchmark")
    patch_size: int = 32  # 16 measures ViT-B/16
    trained_checkpoint: str | None = None  # a trained HESP folder for the bf16 decision-agreement row
    trained_clips: str | None = None


Row = dict  # {"what": str, "seconds": float | None, "ratio": float | None}
Section = Callable[[Settings], tuple[list[Row], dict[str, float]]]


def print_header() -> None:
    print(f"machine: {machine()}\n")
    print("| section | what | seconds (ours) | ratio (baseline / ours) |")
    print("| --- | --- | --- | --- |")


def print_rows(section: str, rows: list[Row]) -> None:
    for row in rows:
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.1f}x"
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.4f}"
        print(f"| {section} | {row['what']} | {seconds} | {ratio} |", flush=True)


def write_ratios(path: Path, ratios: dict[str, float]) -> None:
    write_text_atomic(path, json.dumps({"machine": machine(), **ratios}, indent=2) + "\n")


def best_time(function: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs (the least disturbed by other load on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times_in_rotation(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The fastest of `repeats` runs of each function, run in turn (a, b, c, a, b, c, ...), so that background load
    on a shared machine falls on all of them alike and their ratios hold."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(best_time(function, 1))
    return {name: min(values) for name, values in times.items()}


def bench_device() -> str:
    """The device taken from the environment: CUDA when PyTorch sees one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


MATRIX_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix instruction sets that int8 and bf16 speed depend on (Linux `/proc/cpuinfo`)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in MATRIX_FLAGS if flag in flags]


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")


def machine() -> str:
    import torch

    accelerator = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    flags = cpu_flags()
    return (
        f"{platform.machine()} {cpu_name()}, {os.cpu_count()} cores, flags {' '.join(flags) or 'unknown'} "
        f"({'AMX' if 'amx_tile' in flags else 'no AMX'}), CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} torch threads, {accelerator}"
    )


def peak_rss_added(run: Callable[[], object]) -> int:
    """Highest resident memory seen while `run()` runs (sampled every millisecond) minus the memory before it.

    `ru_maxrss` cannot be used: it is the process's all-time peak, which model construction may already have set."""
    import ctypes
    import threading

    import psutil

    process = psutil.Process()
    try:  # hand memory the allocator cached from earlier work back to the system, so it is not silently reused
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], process.memory_info().rss) - before
