"""The truth about the demo model: a model built on a backbone pretrained on drawn synthetic faces records it, and
every way of loading it (hesp-predict, the pipeline) says once that its answers on real faces mean nothing."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hesp_hf.embedded.video_writer import write_video
from hesp_hf.modeling.provenance_hesp import DRAWN_FACES_NOTICE, learned_drawn_faces
from hesp_hf.pairing import model_and_processor_from_clip

from .conftest import LABELS, random_video


REPO = Path(__file__).resolve().parents[1]


def saved_pair(clip: Path, folder: Path) -> Path:
    model, processor = model_and_processor_from_clip(str(clip), LABELS, num_frames=4)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tiny_clip_dir, tmp_path_factory):
    """A checkpoint on a backbone whose build_info.json says it saw synthetic faces only, and one on a backbone that
    says nothing of the kind."""
    root = tmp_path_factory.mktemp("provenance")
    drawn = root / "drawn-clip"
    shutil.copytree(tiny_clip_dir, drawn)
    (drawn / "build_info.json").write_text(json.dumps({"description": "test", "synthetic_pretraining": True}))
    return {"drawn": saved_pair(drawn, root / "drawn"), "real": saved_pair(tiny_clip_dir, root / "real")}


def notices(text: str) -> list[str]:
    return [line for line in text.splitlines() if DRAWN_FACES_NOTICE in line]


def test_the_config_records_a_backbone_that_saw_drawn_faces_only(checkpoints):
    drawn = json.loads((checkpoints["drawn"] / "config.json").read_text())
    real = json.loads((checkpoints["real"] / "config.json").read_text())
    assert drawn.get("synthetic_backbone") is True and "synthetic_backbone" not in real


def test_a_checkpoint_from_before_the_record_is_told_by_its_run_arguments(checkpoints, tmp_path):
    from hesp_hf import HESPConfig

    older = tmp_path / "older"
    shutil.copytree(checkpoints["real"], older)  # a config without the record ...
    config = HESPConfig.from_pretrained(older)
    assert not learned_drawn_faces(config, older)
    drawn_clip = tmp_path / "drawn-clip"
    drawn_clip.mkdir()
    (drawn_clip / "build_info.json").write_text('{"synthetic_pretraining": true}')
    (older / "run_arguments.json").write_text(json.dumps({"clip_model": str(drawn_clip)}))  # ... trained on it
    assert learned_drawn_faces(config, older)


def test_hesp_predict_and_the_pipeline_say_it_once(checkpoints, tmp_path, run_cli, caplog):
    """Once per process (each in a fresh one, as a user starts them) for the drawn-faces backbone; never for another."""
    clip = write_video(tmp_path / "clip.mp4", random_video(frames=6, height=40, width=48))
    predict = [
        sys.executable, str(REPO / "scripts" / "predict.py"), "--checkpoint", str(checkpoints["drawn"]),
        "--output", str(tmp_path / "drawn.jsonl"), "--no_progress", str(clip),
    ]  # fmt: skip
    done = subprocess.run(predict, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(notices(done.stderr)) == 1, done.stderr[-2000:]
    script = (
        "import hesp_hf\nfrom transformers import pipeline\n"
        f"print(pipeline('video-classification', model={str(checkpoints['drawn'])!r})({str(clip)!r})[0]['label'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(notices(done.stderr)) == 1, done.stderr[-2000:]

    from transformers import pipeline

    from hesp_hf.commands.predict import cli

    real = run_cli(cli, "predict.py", "--checkpoint", checkpoints["real"], "--output", tmp_path / "real.jsonl",
                   "--no_progress", clip)  # fmt: skip
    assert real.returncode == 0 and (tmp_path / "real.jsonl").exists(), real.stderr[-2000:]
    assert not notices(real.log + real.stderr)
    caplog.clear()
    assert pipeline("video-classification", model=str(checkpoints["real"]))(str(clip))[0]["label"]
    assert not notices(caplog.text)
    assert "train on your own recordings" in DRAWN_FACES_NOTICE and "mean nothing" in DRAWN_FACES_NOTICE
