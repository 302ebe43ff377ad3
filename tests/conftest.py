"""Shared fixtures: a tiny CLIP checkpoint saved locally (no download) and HESP models built on it."""

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


def random_video(frames=4, height=32, width=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


@pytest.fixture
def sample_clip(tmp_path):
    """An H.264 mp4 of 6 frames, written with PyAV."""
    return write_video(tmp_path / "clip.mp4", random_video(frames=6, height=40, width=48))
