"""Saved checkpoints through `pipeline("video-classification")`, with the package and as remote code without it."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoVideoProcessor, pipeline

from hesp_hf import HESPVideoProcessor

from .conftest import LABELS


@pytest.fixture
def checkpoint(make_model, tiny_clip_dir, tmp_path):
    model = make_model()
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    directory = tmp_path / "ckpt"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_pipeline_names_known_labels_and_unknown(checkpoint, sample_clip):
    classifier = pipeline("video-classification", model=str(checkpoint))
    result = classifier(str(sample_clip))
    assert [r["label"] for r in result][-1] == "unknown"  # uncalibrated: "unknown" has probability 0
    assert {r["label"] for r in result} == set(LABELS) | {"unknown"}
    assert result[0]["label"] in LABELS
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)

    # A threshold above every score makes "unknown" the top label.
    config = json.loads((checkpoint / "config.json").read_text())
    config["unknown_threshold"] = 1e9
    (checkpoint / "config.json").write_text(json.dumps(config))
    rejecting = pipeline("video-classification", model=str(checkpoint))
    assert rejecting(str(sample_clip))[0]["label"] == "unknown"


def test_pipeline_matches_model_on_processor_output(checkpoint, sample_clip):
    classifier = pipeline("video-classification", model=str(checkpoint))
    processor = AutoVideoProcessor.from_pretrained(checkpoint)
    assert isinstance(processor, HESPVideoProcessor)
    inputs = processor(str(sample_clip), return_tensors="pt")
    with torch.no_grad():
        probs = classifier.model(**inputs).logits[0].softmax(-1)
    top = classifier(str(sample_clip), top_k=1)[0]
    assert top["label"] == classifier.model.config.id2label[int(probs.argmax())]
    assert top["score"] == pytest.approx(float(probs.max()), rel=1e-5)


@pytest.fixture
def inference_only_checkpoint(checkpoint, tmp_path):
    from hesp_hf.inference.export import export_inference_only

    return export_inference_only(str(checkpoint), tmp_path / "inference-only")


@pytest.mark.parametrize("form", ["checkpoint", "inference_only_checkpoint"])
def test_remote_code_without_the_package(form, request, sample_clip, tmp_path):
    """A fresh interpreter where `hesp_hf` cannot be imported loads everything from the checkpoint's own files; the
    same for the inference-only export (no text tower), whose logits are the full checkpoint's."""
    checkpoint = request.getfixturevalue(form)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hesp_hf"] = None  # `import hesp_hf` now raises ImportError
        try:
            import hesp_hf
            raise SystemExit("hesp_hf should not be importable here")
        except ImportError:
            pass
        import torch
        from transformers import AutoModel, AutoModelForVideoClassification, AutoVideoProcessor, pipeline
        model = AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert not any(p.requires_grad for p in model.vision_model.parameters())
        AutoModelForVideoClassification.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        processor = AutoVideoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        inputs = processor({str(sample_clip)!r}, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        torch.save(logits, {str(tmp_path / "remote.pt")!r})
        classifier = pipeline("video-classification", model={str(checkpoint)!r}, trust_remote_code=True)
        print("LABELS", [r["label"] for r in classifier({str(sample_clip)!r})])
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    labels = eval(done.stdout.split("LABELS", 1)[1].strip())
    assert set(labels) == set(LABELS) | {"unknown"}

    from transformers import AutoModel

    local = AutoModel.from_pretrained(request.getfixturevalue("checkpoint")).eval()
    inputs = AutoVideoProcessor.from_pretrained(checkpoint)(str(sample_clip), return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "remote.pt"), local(**inputs).logits, rtol=0, atol=0)


def test_remote_code_face_crop_checkpoint(checkpoint, tmp_path):
    """A checkpoint saved with `face_crop=True` loads through remote code without `hesp_hf`: with OpenCV the
    pipeline crops; without it the face step raises naming the extra to install."""
    import numpy as np

    from hesp_hf.embedded.synthetic import place_in_scene, render_clip
    from hesp_hf.embedded.video_writer import write_video

    processor = AutoVideoProcessor.from_pretrained(checkpoint)
    processor.face_crop, processor.face_min_score = True, 0.1  # drawn faces score low
    processor.save_pretrained(checkpoint)
    faces, _ = render_clip("happiness", 4, 8, 64)
    scene, _ = place_in_scene(faces, 4, 144)
    clip = write_video(tmp_path / "scene.mp4", scene, fps=8)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hesp_hf"] = None
        if sys.argv[1] == "without-opencv":
            sys.modules["cv2"] = None
        from transformers import AutoVideoProcessor, pipeline
        processor = AutoVideoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        assert processor.face_crop is True
        try:
            classifier = pipeline("video-classification", model={str(checkpoint)!r}, trust_remote_code=True)
            print("LABELS", [r["label"] for r in classifier({str(clip)!r})])
        except ImportError as error:
            print("IMPORT-ERROR", error)
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    for mode in ("with-opencv", "without-opencv"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        if mode == "with-opencv":
            assert set(eval(done.stdout.split("LABELS", 1)[1].strip())) == set(LABELS) | {"unknown"}
            assert "No face found" not in done.stderr
        else:
            assert "IMPORT-ERROR" in done.stdout and 'pip install "hesp-hf[face]"' in done.stdout
    assert np.isfinite(scene).all()


def test_a_pair_that_disagrees_on_num_frames_is_one_clear_error(checkpoint, tmp_path):
    """The model owns the settings it shares with its processor: a saved processor sampling 6 frames (and normalising
    with another std) beside a model built for 4 is refused by every loading path (the Auto classes, the pipeline, and
    remote code without the package), naming both values of each."""
    from transformers import AutoModel, AutoModelForVideoClassification

    settings_file = checkpoint / "video_preprocessor_config.json"
    settings = json.loads(settings_file.read_text())
    assert settings["num_frames"] == 4
    settings_file.write_text(json.dumps({**settings, "num_frames": 6, "image_std": [0.5, 0.5, 0.5]}))
    expected = (
        r"disagree -- num_frames: config.json says 4, video_preprocessor_config.json says 6; image_std: config.json "
        r"says \[[0-9., ]+\], video_preprocessor_config.json says \[0.5, 0.5, 0.5\]"
    )
    for load in (
        AutoModel.from_pretrained,
        AutoModelForVideoClassification.from_pretrained,
        AutoVideoProcessor.from_pretrained,
        lambda path: pipeline("video-classification", model=path),
    ):
        with pytest.raises(ValueError, match=expected):
            load(str(checkpoint))
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hesp_hf"] = None
        from transformers import AutoModel
        try:
            AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        except ValueError as error:
            print("ERROR", error)
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "ERROR" in done.stdout and "says 4" in done.stdout and "says 6" in done.stdout, done.stderr[-2000:]
    settings_file.write_text(json.dumps(settings))  # agreeing again: loads
    AutoModel.from_pretrained(str(checkpoint))
