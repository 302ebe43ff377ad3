"""Checkpoints users already have keep loading and predicting the same: one saved by hesp-hf 0.1.0 (before issue 36
renamed the hidden-state outputs and changed initialisation and loading), through today's code and through its own
remote-code files."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForVideoClassification, AutoVideoProcessor

from hesp_hf import HESPForOpenSetVideoClassification


OLD_CHECKPOINT = Path(__file__).parent / "fixtures" / "hesp-checkpoint-0.1.0"


@pytest.fixture
def expected():
    return load_file(OLD_CHECKPOINT / "expected_outputs.safetensors")


@pytest.mark.parametrize("loader", [HESPForOpenSetVideoClassification, AutoModel, AutoModelForVideoClassification])
def test_old_checkpoint_predicts_the_same_with_todays_code(loader, expected):
    model = loader.from_pretrained(OLD_CHECKPOINT).eval()
    assert isinstance(model, HESPForOpenSetVideoClassification)
    with torch.no_grad():
        output = model(pixel_values_videos=expected["pixel_values_videos"])
    for name in ("logits", "open_set_score", "video_embeds"):
        torch.testing.assert_close(output[name], expected[name], rtol=1e-5, atol=1e-6)
    # The recorded decisions: clip 0 below the threshold ("unknown"), clip 1 a known class.
    assert [model.config.id2label[int(i)] for i in output.logits.argmax(-1)] == ["unknown", "sad"]
    assert not any(p.requires_grad for p in model.vision_model.parameters())  # the towers stay frozen
    assert AutoVideoProcessor.from_pretrained(OLD_CHECKPOINT).num_frames == model.config.num_frames


def test_old_checkpoint_predicts_the_same_with_its_own_files(expected, tmp_path):
    """Where `hesp_hf` is not installed the checkpoint's own 0.1.0 files run (remote code)."""
    checkpoint = shutil.copytree(OLD_CHECKPOINT, tmp_path / "checkpoint")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hesp_hf"] = None  # `import hesp_hf` now raises ImportError
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        inputs = load_file({str(checkpoint / "expected_outputs.safetensors")!r})["pixel_values_videos"]
        with torch.no_grad():
            torch.save(model(pixel_values_videos=inputs).logits, {str(tmp_path / "remote.pt")!r})
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), expected["logits"], rtol=1e-5, atol=1e-6)
