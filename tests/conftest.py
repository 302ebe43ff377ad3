"""Shared fixtures: a tiny CLIP checkpoint saved locally (no download), HESP models built on it, and commands run in
this process."""

import logging
import sys
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch

from hesp_hf import HESPForOpenSetVideoClassification
from hesp_hf.embedded.tiny_clip import save_tiny_clip
from hesp_hf.embedded.video_writer import write_video


LABELS = ["happy", "sad", "neutral"]


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def make_model(tiny_clip_dir):
    def make(**overrides) -> HESPForOpenSetVideoClassification:
        overrides.setdefault("num_frames", 4)
        torch.manual_seed(0)
        return HESPForOpenSetVideoClassification.from_clip(str(tiny_clip_dir), labels=LABELS, **overrides)

    return make


class CommandResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    log: str  # what the command logged at INFO and above (a script's log goes to stderr)


@pytest.fixture
def run_cli(monkeypatch, capsys, caplog):
    """Run a command's `cli` (the function its script and console command call) in this process, as the script
    `program` with `arguments`, the Hub offline, one torch thread (as the scripts run in the tests: OMP_NUM_THREADS=1)
    and `env` set for the call: its exit status, what it printed and what it logged. An error that is not the
    user's propagates as the exception (a script would print its traceback). A fresh interpreter spends 5-7 s
    importing torch and transformers before a command's first line; tests that start one (`subprocess`) are kept
    where the process itself is checked (docs/architecture.md)."""
    import datasets.config
    import huggingface_hub.constants

    def run(cli: Callable[[], None], program: str, *arguments: object, env: dict[str, str] | None = None):
        with monkeypatch.context() as patch:
            patch.setattr(sys, "argv", [program, *map(str, arguments)])
            patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
            patch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            caplog.clear()
            caplog.set_level(logging.INFO)
            capsys.readouterr()
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                cli()
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            finally:
                torch.set_num_threads(threads)
            out, err = capsys.readouterr()
        return CommandResult(code, out, err, caplog.text)

    return run


def random_video(frames=4, height=32, width=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


@pytest.fixture
def sample_clip(tmp_path):
    """An H.264 mp4 of 6 frames, written with PyAV."""
    return write_video(tmp_path / "clip.mp4", random_video(frames=6, height=40, width=48))


def frozen_prototype_model(known: list[str], num_frames: int = 8):
    """A prototype head on the embedded CLIP's frozen features, fitted on rendered clips of the `known` classes
    (seeds 100-109; no training), its threshold below every fitted clip's known-ness with a margin for new
    identities (known ~12-14, unknown ~3-6 on the drawn faces). Returns the model (eval) and its processor."""
    from hesp_hf import model_and_processor_from_clip
    from hesp_hf.embedded import embedded_clip_path
    from hesp_hf.embedded.synthetic import render_clip

    model, processor = model_and_processor_from_clip(
        embedded_clip_path(), known, num_frames=num_frames, use_visual_prompt=False
    )
    model.eval()
    model.config.inference_logits, model.config.prototype_space = "prototypes", "frozen"
    fit = [render_clip(label, seed)[0] for label in known for seed in range(100, 110)]
    pixels = processor([torch.from_numpy(c).permute(0, 3, 1, 2) for c in fit], return_tensors="pt")
    with torch.no_grad():
        prompted = model.frame_features(pixels["pixel_values_videos"].flatten(0, 1))[0]
        embeds = torch.nn.functional.normalize(prompted.view(len(fit), num_frames, -1), dim=-1).mean(1)
    model.set_class_prototypes(embeds, torch.arange(len(known)).repeat_interleave(10))
    with torch.no_grad():
        fit_scores = model.classify_frame_features(prompted.view(len(fit), num_frames, -1)).open_set_score
    model.config.unknown_threshold = 0.8 * float(fit_scores.min())
    return model, processor
