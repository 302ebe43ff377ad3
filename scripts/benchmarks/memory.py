"""memory: peak memory added by a training step (resident memory sampled every millisecond on a CPU, the
allocator's peak on CUDA) and the activations autograd keeps for backward, with and without activation
checkpointing, each measured in a subprocess (`scripts/benchmark.py --memory_probe`)."""

import json
import os
from collections.abc import Callable
from pathlib import Path

from .fixtures import vit_b32_models
from .harness import Settings, bench_device, peak_rss_added


BENCHMARK_SCRIPT = Path(__file__).resolve().parents[1] / "benchmark.py"


def saved_activation_bytes(model, run: Callable[[], object]) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while `run()` runs a forward of `model`, without the
    model's own weights (linear layers keep a transposed view of theirs)."""
    import torch

    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    weights |= {buffer.untyped_storage().data_ptr() for buffer in model.buffers()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())


def memory_probe(checkpointing: bool, quick: bool, patch_size: int = 32) -> None:
    """Run one training step in this process; print the peak memory it added and the activations kept for backward."""
    import torch

    device = bench_device()
    model = vit_b32_models(quick, patch_size, ("mean",))["mean"].to(device).train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    batch = 2 if quick else (64 if device == "cuda" else 8)
    labels = (torch.arange(batch) % model.config.num_known_labels).to(device)
    # A one-clip warm-up first: the first step also allocates thread pools and kernel caches, which are not activations.
    model(torch.randn(1, 8, 3, 224, 224, device=device), labels=labels[:1]).loss.backward()
    model.zero_grad(set_to_none=True)
    clips = torch.randn(batch, 8, 3, 224, 224, device=device)

    def step() -> None:
        model(clips, labels=labels).loss.backward()

    saved = saved_activation_bytes(model, lambda: model(clips, labels=labels))
    model.zero_grad(set_to_none=True)
    if device == "cuda":  # device memory: the allocator's own peak counter
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        added = torch.cuda.max_memory_allocated() - before
    else:
        added = peak_rss_added(step)
    print(json.dumps({"added_peak_mib": added / 2**20, "saved_activations_mib": saved / 2**20}))


def benchmark_memory(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    import subprocess
    import sys

    added, saved = {}, {}
    for checkpointing in (False, True):
        command = [
            sys.executable,
            str(BENCHMARK_SCRIPT),
            "--memory_probe",
            str(int(checkpointing)),
            "--patch_size",
            str(settings.patch_size),
        ]
        command += ["--quick"] if settings.quick else []
        # A fixed mmap threshold: glibc otherwise raises it as large blocks are freed and keeps later ones in its heap,
        # so resident memory would count freed temporaries as if they were still live.
        environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
        probe = json.loads(output.strip().splitlines()[-1])
        added[checkpointing], saved[checkpointing] = probe["added_peak_mib"], probe["saved_activations_mib"]
    ratio, saved_ratio = added[True] / added[False], saved[True] / saved[False]
    rows = [
        {
            "what": f"peak memory added by a training step: {added[False]:.0f} MiB without checkpointing "
            f"({saved[False]:.0f} MiB of activations kept for backward)",
            "seconds": float("nan"),
            "ratio": None,
        },
        {
            "what": f"with activation checkpointing: {added[True]:.0f} MiB ({saved[True]:.0f} MiB kept; "
            f"ratio = with / without: peak {ratio:.2f}, kept {saved_ratio:.2f})",
            "seconds": float("nan"),
            "ratio": ratio,
        },
    ]
    return rows, {
        "train.checkpointing_peak_memory_ratio": ratio,
        "train.checkpointing_saved_activations_ratio": saved_ratio,
    }


run = benchmark_memory
