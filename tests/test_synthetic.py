"""The embedded default: synthetic clips, the embedded tiny CLIP, and a shrunken `make demo`."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel

from hesp_hf import HESPVideoProcessor
from hesp_hf.embedded.defaults import embedded_clip_path
from hesp_hf.embedded.synthetic import (
    ACTIONS,
    CLASSES,
    RECIPES,
    SyntheticSpec,
    caption,
    render_clip,
    write_synthetic_dataset,
)
from hesp_hf.modeling.video_decoding_hesp import decode_video


REPO = Path(__file__).resolve().parents[1]


def test_clips_are_deterministic_by_seed():
    first, actions = render_clip("fear", seed=7, num_frames=6, size=48)
    again, _ = render_clip("fear", seed=7, num_frames=6, size=48)
    other, _ = render_clip("fear", seed=8, num_frames=6, size=48)
    assert first.shape == (6, 48, 48, 3) and first.dtype == np.uint8 and actions.shape == (6, len(ACTIONS))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_classes_differ_in_the_rendered_expression():
    """Same seed, so the same person, scene and timing: only the expression differs, and it shows at the apex."""
    clips = {label: render_clip(label, seed=3, num_frames=12, size=64) for label in ("neutral", "surprise", "anger")}
    neutral_frames, neutral_actions = clips["neutral"]
    assert np.abs(neutral_actions).max() == 0
    for label in ("surprise", "anger"):
        frames, actions = clips[label]
        apex = int(np.abs(actions).sum(axis=1).argmax())
        difference = np.abs(frames[apex].astype(int) - neutral_frames[apex].astype(int)).mean()
        assert difference > 1.0, label  # the face changed
        assert np.array_equal(frames[0], neutral_frames[0]) or np.abs(actions[0]).max() > 0  # start: same face
    assert caption(clips["surprise"][1].max(axis=0)) == "brows raised, eyes wide, mouth open"


def test_recipes_share_actions_and_captions_never_name_emotions():
    assert set(RECIPES) == set(CLASSES) and len(CLASSES) == 11
    assert RECIPES["fear"]["brow_raise"] > 0 and RECIPES["surprise"]["brow_raise"] > 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        text = caption(rng.uniform(-1, 1, len(ACTIONS)))
        assert not any(name in text for name in CLASSES)


def test_dataset_is_written_decodable_and_cached(tmp_path):
    spec = SyntheticSpec(
        classes=("neutral", "happiness", "fear"), train_per_class=2, test_per_class=1, num_frames=5, size=32
    )
    folder = write_synthetic_dataset(tmp_path, spec)
    assert b"\r" not in (folder / "train.csv").read_bytes()  # plain \n line ends
    rows = list(csv.DictReader((folder / "train.csv").open()))
    assert [r["label"] for r in rows] == ["neutral"] * 2 + ["happiness"] * 2 + ["fear"] * 2
    assert len(list(csv.DictReader((folder / "test.csv").open()))) == 3
    decoded = decode_video(folder / rows[0]["video_path"])
    frames, metadata = decoded.frames, decoded.metadata
    assert frames.shape == (5, 32, 32, 3) and metadata.total_num_frames == 5
    stamp = (folder / rows[0]["video_path"]).stat().st_mtime_ns
    assert write_synthetic_dataset(tmp_path, spec) == folder  # reused, not rewritten
    assert (folder / rows[0]["video_path"]).stat().st_mtime_ns == stamp


def test_embedded_clip_loads_offline_and_sees_facial_actions():
    path = embedded_clip_path()
    model = CLIPModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = HESPVideoProcessor.from_clip(path, num_frames=1)
    assert processor.crop_size.height == model.config.vision_config.image_size == 64
    texts = ["relaxed face", "brows raised, eyes wide, mouth open", "lip corners up, eyes narrowed"]
    frames = []
    for label in ("neutral", "surprise", "happiness"):
        clip, actions = render_clip(label, seed=123, num_frames=16, size=64)
        frames.append(clip[int(np.abs(actions).sum(axis=1).argmax())])
    pixels = processor(np.stack(frames)[:, None], return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
    with torch.no_grad():
        images = F.normalize(model.get_image_features(pixel_values=pixels[:, 0]).pooler_output, dim=-1)
        text = F.normalize(
            model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt")).pooler_output, dim=-1
        )
    similarity = images @ text.T  # (3 frames, 3 captions)
    assert similarity.argmax(dim=1).tolist() == [0, 1, 2]  # each expression matches its own action caption
    assert (images[0] @ images[1]) < 0.95  # different actions, different features


def test_same_spec_gives_identical_bytes(tmp_path):
    """Reproducible data: writing a spec twice gives the same files, byte for byte, even with other encodes in
    between (the old writer's libx264 output depended on threading and on uninitialised row padding: the same
    frames gave different files within one process)."""
    spec = SyntheticSpec(classes=("anger", "happiness"), train_per_class=2, test_per_class=1, seed=5)

    def contents(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    first = contents(write_synthetic_dataset(tmp_path / "a", spec))
    write_synthetic_dataset(tmp_path / "other", SyntheticSpec(classes=("fear",), train_per_class=3, seed=9))
    second = contents(write_synthetic_dataset(tmp_path / "b", spec))
    assert len(first) == 3 + 3 + 3  # 6 clips, train.csv, test.csv, spec.json
    assert first == second


def test_the_demo_replaces_only_its_own_earlier_runs(tmp_path, run_cli):
    """A folder holding someone's model (a config.json, notes beside it) is refused before any work and kept whole;
    an earlier demo run (trained on the demo's synthetic clips: a spec.json beside its train.csv) is recognised."""
    from hesp_hf.commands.demo import cli, is_previous_demo_run

    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    for name, text in (("config.json", "{}"), ("NOTES.txt", "notes"), ("sub/model.bin", "weights")):
        (precious / name).write_text(text)
    data = tmp_path / "synthetic"
    done = run_cli(cli, "hesp-demo", "--output_dir", precious, "--data_dir", data, "--epochs", "1")
    assert done.returncode == 2 and "--output_dir" in done.stderr and str(precious) in done.stderr, done.stderr
    assert "not an earlier hesp-demo run" in done.stderr and "\n(set HESP_DEBUG" in done.stderr
    assert sorted(p.relative_to(precious).as_posix() for p in precious.rglob("*")) == [
        "NOTES.txt", "config.json", "sub", "sub/model.bin"
    ]  # fmt: skip
    assert not data.exists()  # refused before the clips were written

    def run_folder(name: str, annotation: Path) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "run_arguments.json").write_text(json.dumps({"data": {"train_annotation": str(annotation)}}))
        return folder

    synthetic = tmp_path / "synthetic-abc"
    synthetic.mkdir()
    (synthetic / "spec.json").write_text("{}")
    assert is_previous_demo_run(run_folder("demo", synthetic / "train.csv"))
    assert not is_previous_demo_run(run_folder("mine", tmp_path / "mine" / "train.csv"))
    assert not is_previous_demo_run(precious)


def test_shrunken_demo_runs_end_to_end(tmp_path):
    command = [
        sys.executable, str(REPO / "scripts" / "demo.py"), "--output_dir", str(tmp_path / "demo"),
        "--data_dir", str(tmp_path / "synthetic"), "--train_per_class", "3", "--test_per_class", "1",
        "--epochs", "1", "--batch_size", "8", "--extra", "--max_steps", "2", "--validation_fraction", "0.34",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"demo: accuracy=[01]\.\d{4} auroc=[01]\.\d{4} oscr=[01]\.\d{4}", last), last
    assert "known clip (happiness):" in done.stdout and "unknown clip (" in done.stdout
    rows = [
        line.split(" | ")[0]
        for line in done.stdout.splitlines()
        if line.startswith("| centred") or line.startswith("| scenes")
    ]
    assert rows == ["| centred clips (as trained)", "| scenes, whole frame", "| scenes, face_crop=True",
                    "| scenes, cropped at the true face tile (no detector)"], rows  # fmt: skip
    for name in ("metrics.json", "curves.png", "README.md", "model.safetensors"):
        assert (tmp_path / "demo" / name).exists()
    card = (tmp_path / "demo" / "README.md").read_text()
    assert "Synthetic facial-expression clips generated by `hesp_hf.embedded.synthetic`" in card
    assert "never seen a real face" in card and "web-scale" not in card and "base_model" not in card
