"""`datasets` datasets as a clip source: videofolder, parquet with paths, save_to_disk with a Video column (bytes),
streaming, the model card's dataset entry and one-line errors for bad input."""

import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from huggingface_hub import ModelCard

import hesp_hf
from hesp_hf.data.hf_datasets import DatasetSource, dataset_open_set_split
from hesp_hf.embedded.video_writer import write_video


CLASSES = ["calm", "frown", "gasp", "smile"]  # sorted: the order distinct strings give
KNOWN = ["calm", "frown", "smile"]


def _frames(index: int, seed: int) -> np.ndarray:
    # Constant in time: every sampled moment shows the same picture, so frame positions cannot change a result.
    picture = np.random.default_rng(seed).integers(0, 60, (1, 32, 32, 3), dtype=np.uint8) + np.uint8(50 * index)
    return np.repeat(picture, 4, axis=0)


@pytest.fixture(scope="module")
def videofolder(tmp_path_factory):
    """train/<class>/*.mp4 (3 per class) and test/<class>/*.mp4 (2 per class)."""
    root = tmp_path_factory.mktemp("videofolder")
    for split, count in (("train", 3), ("test", 2)):
        for index, name in enumerate(CLASSES):
            for n in range(count):
                write_video(root / split / name / f"{name}_{n}.mp4", _frames(index, 100 * index + n + len(split)))
    return root


def _options(clip_dir, output_dir, **extra):
    options = dict(
        clip_model=str(clip_dir), output_dir=str(output_dir), known_labels=KNOWN, num_frames=2,
        max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4, eval_strategy="no",
        save_strategy="no", load_best_model_at_end=False, report_baselines=False, dataloader_num_workers=0,
        validation_fraction=0.34, augmentation="none", logging_steps=1, seed=0, visual_prompt_estimation_clips=4,
    )  # fmt: skip
    return {**options, **extra}


def _metrics(folder) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


def test_videofolder_trains_and_evaluates_from_the_command_line(videofolder, tiny_clip_dir, tmp_path, run_cli):
    from hesp_hf.commands import evaluate, predict, train

    output = tmp_path / "run"
    done = run_cli(
        train.cli, "train.py", "--dataset_name", "videofolder", "--data_dir", videofolder,
        "--known_labels", "calm,frown,smile", "--clip_model", tiny_clip_dir, "--num_frames", "2", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--report_baselines", "false", "--dataloader_num_workers", "0",
        "--output_dir", output,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _metrics(output)
    assert metrics["num_known"] == 6 and metrics["num_unknown"] == 2  # 3 known x 2 test clips + 2 gasp clips
    assert "seeded 10%" in metrics["validation_from"] and "no validation split" in metrics["validation_from"]
    assert "known classes" in done.log  # the run's log is here ...
    assert "Class names from the distinct values" not in done.log  # ... and videofolder's label is a ClassLabel
    card = ModelCard.load(output / "README.md")
    assert not card.data.datasets  # a local folder is never named as a Hub dataset
    assert card.data.eval_results[0].dataset_type == f"{videofolder.name} (local)"
    assert "a local dataset" in card.text

    evaluation = tmp_path / "eval"
    done = run_cli(
        evaluate.cli, "run_evaluation.py", "--checkpoint", output, "--output_dir", evaluation,
        "--dataset_name", "videofolder", "--data_dir", videofolder, "--num_workers", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert _metrics(evaluation)["auroc"] == pytest.approx(metrics["auroc"], abs=1e-6)
    assert _metrics(evaluation)["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)

    rows = tmp_path / "rows.jsonl"
    done = run_cli(
        predict.cli, "predict.py", "--checkpoint", output, "--output", rows, "--dataset_name", "videofolder",
        "--data_dir", videofolder, "--split", "test", "--num_workers", "0", "--no_progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(json.loads(line)["file"] for line in rows.read_text().splitlines())
    assert files == sorted(str(path) for path in (videofolder / "test").rglob("*.mp4"))


def test_protocol_reads_the_classes_of_a_datasets_dataset(videofolder, tiny_clip_dir):
    from hesp_hf.commands.protocol import dataset_classes

    train_args = ["--dataset_name", "videofolder", "--data_dir", str(videofolder), "--clip_model", str(tiny_clip_dir)]
    assert dataset_classes(train_args) == ("videofolder", CLASSES)


def test_parquet_with_a_path_column_trains_with_its_own_validation_split(videofolder, tiny_clip_dir, tmp_path):
    files = {}
    for split in ("train", "test"):
        rows = [
            {"clip": str(path.relative_to(videofolder)), "expression": path.parent.name}
            for path in sorted((videofolder / split).rglob("*.mp4"))
        ]
        if split == "train":  # the first clip of each class is the validation split
            files["validation"] = [row for row in rows if row["clip"].endswith("_0.mp4")]
            rows = [row for row in rows if not row["clip"].endswith("_0.mp4")]
        files[split] = rows
    data_files = []
    for split, rows in files.items():
        pd.DataFrame(rows).to_parquet(tmp_path / f"{split}.parquet")
        data_files.append(f"{split}={tmp_path / f'{split}.parquet'}")
    output = tmp_path / "run"
    run = hesp_hf.train(
        **_options(
            tiny_clip_dir, output, dataset_name="parquet", data_files=data_files, data_root=str(videofolder),
            video_column_name="clip", label_column_name="expression",
        )
    )  # fmt: skip
    metrics = run.metrics
    assert metrics["validation_from"].startswith("the 'validation' split (3 clips")  # known classes only: no gasp
    assert metrics["num_known"] == 6 and metrics["num_unknown"] == 2
    assert (output / "split.txt").read_text().count("gasp") == 1


@pytest.fixture(scope="module")
def saved_video_dataset(videofolder, tmp_path_factory):
    """A DatasetDict with a `Video` column holding the clips' bytes and a ClassLabel, saved with save_to_disk."""
    feature = datasets.Features({"video": datasets.Video(), "label": datasets.ClassLabel(names=CLASSES)})
    splits = {}
    for split in ("train", "test"):
        paths = sorted((videofolder / split).rglob("*.mp4"))
        table = {
            "video": [{"bytes": path.read_bytes(), "path": None} for path in paths],
            "label": [CLASSES.index(path.parent.name) for path in paths],
        }
        splits[split] = datasets.Dataset.from_dict(table, features=feature)
    folder = tmp_path_factory.mktemp("saved") / "faces"
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def test_saved_video_bytes_train_and_streaming_equals_map_style(saved_video_dataset, tiny_clip_dir, tmp_path):
    """The same clips, map-style and streamed: one batch holds every training clip, so order cannot matter, and the
    two runs agree to float rounding."""
    common = dict(max_steps=1, per_device_train_batch_size=16, validation_fraction=0.0)
    mapped = hesp_hf.train(
        **_options(tiny_clip_dir, tmp_path / "map", dataset_name=str(saved_video_dataset), **common)
    )
    streamed = hesp_hf.train(
        **_options(tiny_clip_dir, tmp_path / "stream", dataset_name=str(saved_video_dataset), streaming=True, **common)
    )
    assert mapped.metrics["num_known"] == 6 and mapped.metrics["num_unknown"] == 2
    for name in ("accuracy", "auroc", "oscr", "unknown_threshold"):
        if mapped.metrics.get(name) is not None:
            assert streamed.metrics[name] == pytest.approx(mapped.metrics[name], abs=1e-5), name
    assert streamed.metrics["skipped_clips"] == {"train": 0, "validation": 0, "test": 0}


def test_a_dataset_object_from_python_and_bad_clips_in_a_stream(saved_video_dataset, tiny_clip_dir, tmp_path):
    loaded = datasets.load_from_disk(str(saved_video_dataset))
    broken = loaded["test"].cast_column("video", datasets.Video(decode=False))
    rows = broken.to_dict()
    rows["video"][0] = {"bytes": b"not a video at all", "path": None}
    feature = datasets.Features({"video": datasets.Video(), "label": loaded["test"].features["label"]})
    dataset = datasets.DatasetDict({"train": loaded["train"], "test": datasets.Dataset.from_dict(rows, feature)})
    run = hesp_hf.train(
        **_options(tiny_clip_dir, tmp_path / "run", dataset_name=dataset, streaming=True, on_bad_clip="skip")
    )
    assert run.metrics["skipped_clips"]["test"] == 1
    report = (tmp_path / "run" / "clip_report.tsv").read_text()
    assert "test\tskipped\t" in report and "[test][0]" in report and "text, not a video" in report


def test_the_card_names_a_hub_dataset_by_id_config_and_split(tmp_path):
    from hesp_hf.hub.model_card import BackboneInfo, HubDataset, render_model_card

    metrics = {"accuracy": 0.5, "auroc": 0.6, "oscr": 0.4, "fpr_at_95_tpr": 0.3, "num_known": 4, "num_unknown": 2}
    card = render_model_card(
        repo_id="me/x", backbone=BackboneInfo(None, "tiny", True), dataset_name="org/faces",
        data_description="d", synthetic_data=False, known_labels=["a"], unknown_labels=["b"], metrics=metrics,
        split_description="s", training_summary="t", temporal_pooling="mean", threshold=None, keep_share=0.95,
        known_ness="k", hub_dataset=HubDataset("org/faces", "clips", "test"),
    )  # fmt: skip
    loaded = ModelCard(str(card))
    assert loaded.data.datasets == ["org/faces"]
    result = loaded.data.eval_results[0]
    assert (result.dataset_type, result.dataset_config) == ("org/faces", "clips")
    assert result.dataset_split.startswith("test")
    assert DatasetSource(name="org/faces").hub_id == "org/faces"
    assert DatasetSource(name="videofolder", data_dir="x").hub_id is None
    assert DatasetSource(name=str(tmp_path)).hub_id is None


def test_string_labels_are_sorted_and_logged(videofolder, caplog):
    table = {"video": [], "label": []}
    for path in sorted((videofolder / "train").rglob("*.mp4")):
        table["video"].append(str(path))
        table["label"].append(path.parent.name)
    dataset = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(table), "test": datasets.Dataset.from_dict(table)}
    )
    with caplog.at_level("INFO"):
        split = dataset_open_set_split(DatasetSource(dataset=dataset), known_labels=["smile", "calm"])
    assert split.preset.class_names == tuple(CLASSES)
    assert split.known_labels == ["calm", "smile"]
    assert str(CLASSES) in caplog.text
    assert {r.original_label for r in split.test if r.label == -1} == {1, 2}  # frown and gasp are unknown
    assert all(r.label >= 0 for r in split.train + split.validation)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--video_column_name", "clip"], "Column 'clip' (--video_column_name) does not exist in split 'train'"),
        (["--label_column_name", "mood"], "Column 'mood' (--label_column_name) does not exist"),
        (["--test_split_name", "holdout"], "Split 'holdout' does not exist in videofolder over"),
        (["--video_column_name", "label"], "Column 'label' of split 'train' holds ClassLabel"),
    ],
)
def test_bad_input_is_one_line(videofolder, tiny_clip_dir, tmp_path, change, expected, run_cli):
    from hesp_hf.commands.train import cli

    done = run_cli(
        cli, "train.py", "--dataset_name", "videofolder", "--data_dir", videofolder, "--known_labels", "calm",
        "--clip_model", tiny_clip_dir, "--output_dir", tmp_path / "run", *change,
    )  # fmt: skip
    assert done.returncode == 2
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 2  # the error and the HESP_DEBUG hint


def test_a_label_column_without_names_is_refused():
    table = {"video": ["a.mp4", "b.mp4"], "label": [0, 1]}
    dataset = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(table), "test": datasets.Dataset.from_dict(table)}
    )
    with pytest.raises(ValueError, match="Label column 'label' holds integers without class names"):
        dataset_open_set_split(DatasetSource(dataset=dataset), known_labels=["x"])
    empty = {"video": ["a.mp4", "b.mp4"], "label": ["", None]}
    dataset = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(empty), "test": datasets.Dataset.from_dict(empty)}
    )
    with pytest.raises(ValueError, match="Label column 'label' holds no class name"):
        dataset_open_set_split(DatasetSource(dataset=dataset), known_labels=["x"])
