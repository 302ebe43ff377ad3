"""Decoding beside the model: the cores each stage gets (`default_num_workers`, `model_threads`, `CPUThreads`, which
moves cores to whichever stage is slower), and decoding in a thread of this process (`decoded_in_background`) where
worker processes cost more than they give. Shared by the batch predictor and the timeline."""

import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch


def cores_per_process(processes: int) -> int:
    """The CPU cores each of `processes` processes may use (its share of this process's affinity set), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))


def default_num_workers(processes: int = 1) -> int:
    """Decoding workers per process: the cores this process may use, less one for the model, at most 8; none with 2
    cores or fewer, where decoding runs in a thread of this process instead (`decoded_in_background`): a worker
    process starts in seconds and competes with the model for the same cores (measured on 2 cores, one run each,
    fresh process: demo checkpoint 29 clips/s with decoding between batches, 11 with a worker; ViT-B/32 on 720p clips
    1.15 against 0.80)."""
    cores = cores_per_process(processes)
    return 0 if cores <= 2 else min(8, cores - 1)


def decoded_in_background(batches: Any, depth: int = 2) -> Iterator[Any]:
    """The batches of `batches`, read up to `depth` ahead by a thread of this process, so decoding (PyAV, the
    processor's resizing) overlaps the model's forward pass without a worker process: both release the GIL for
    their heavy parts. Measured on 2 cores, demo checkpoint, 165 clips side by side: decoding alone 90.9 clips/s,
    decoding between batches 59.3, in this thread 85.8. An error while reading is raised here; leaving the loop early
    stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def put(item: tuple[Any, BaseException | None]) -> bool:
        """Hand one item over; False once the consumer has stopped (then nobody takes it)."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        # Decoding's own torch work (resizing) on one core: the setting is this thread's (OpenMP's is per thread), so
        # the model keeps its threads and the two stages do not oversubscribe the cores they share.
        torch.set_num_threads(1)
        try:
            for batch in batches:
                if not put((batch, None)):
                    return
            put((finished, None))
        except BaseException as error:  # noqa: BLE001 -- handed to the consuming thread
            put((finished, error))

    reader = threading.Thread(target=read, name="hesp-decode", daemon=True)
    reader.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is finished:
                return
            yield batch
    finally:
        stop.set()
        reader.join()


def model_threads(num_workers: int, processes: int = 1) -> int:
    """CPU threads for the model while decoding is the slower stage: the cores its decoding workers leave."""
    return max(1, cores_per_process(processes) - num_workers)


class CPUThreads:
    """The model's CPU threads, set by which stage is slower (restored at the end).

    While the model waits for decoded clips it keeps to the cores the workers leave (`model_threads`): more threads
    would only take cores from decoding (measured on 2 cores, tiny demo model: 49 clips/s with 1 thread, 38 with 2).
    Once batches are always ready when the model asks (the model is the slower stage), it takes every core of the
    process, and the workers get what it leaves (ViT-B/32 on 720p clips: 0.72 clips/s with 1 thread, 1.21 with 2).
    """

    def __init__(self, device: torch.device, num_workers: int, processes: int):
        self.active = device.type == "cpu" and num_workers > 0
        self.before = torch.get_num_threads()
        self.low, self.high = model_threads(num_workers, processes), cores_per_process(processes)
        self.waited = self.computed = 0.0
        self.batches = 0
        if self.active:
            torch.set_num_threads(self.low)

    def observe(self, waited: float, computed: float) -> None:
        """Seconds the model waited for this batch, and spent on it; decided over the last few batches (not the
        first, which waits for the workers to start), with a margin each way so that it does not flip on noise."""
        self.batches += 1
        if not self.active or self.batches == 1:
            return
        self.waited, self.computed = 0.5 * self.waited + waited, 0.5 * self.computed + computed
        current = torch.get_num_threads()
        if current != self.high and self.waited < 0.05 * self.computed:
            torch.set_num_threads(self.high)
        elif current != self.low and self.waited > 0.25 * self.computed:
            torch.set_num_threads(self.low)

    def restore(self) -> None:
        if self.active:
            torch.set_num_threads(self.before)
