"""scripts/train.py end to end on tiny data: outputs, calibration, resume, two-process DDP, evaluate, protocol."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from hesp_hf.embedded.video_writer import write_video
from hesp_hf.training import PromptSGD, calibrate_threshold, multistep_factor


REPO = Path(__file__).resolve().parents[1]
CLASSES = ["calm", "smile", "frown", "gasp"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_clip_dir):
    """4 classes of short mp4 clips in the CSV layout, 6 training and 3 test clips per class."""
    root = tmp_path_factory.mktemp("tiny-data")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        rows = ["video_path,label"]
        for index, name in enumerate(CLASSES):
            for n in range(count):
                frames = rng.integers(0, 60, (6, 40, 40, 3), dtype=np.uint8) + np.uint8(40 * index)
                write_video(root / "clips" / f"{split}_{name}_{n}.mp4", frames)
                rows.append(f"clips/{split}_{name}_{n}.mp4,{name}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root, tiny_clip_dir


def train_command(data, output_dir, *extra, launcher=None):
    root, clip = data
    arguments = [
        "--dataset", "custom", "--class_names", ",".join(CLASSES), "--known_labels", "calm,smile,frown",
        "--train_annotation", str(root / "train.csv"), "--test_annotation", str(root / "test.csv"),
        "--clip_model", str(clip), "--num_frames", "4", "--output_dir", str(output_dir),
        "--num_train_epochs", "2", "--per_device_eval_batch_size", "4", "--validation_fraction", "0.2",
        "--validation_unknown_fraction", "0.5", "--logging_steps", "1", "--seed", "3", "--learning_rate", "0.05",
        "--milestones", "1", "--temporal_pooling", "attention", "--dataloader_num_workers", "0",
    ]  # fmt: skip
    return [*(launcher or [sys.executable]), str(REPO / "scripts" / "train.py"), *arguments, *extra]


def run(command, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def run_here(run_cli, command):
    """`command` (as `run` takes it: the interpreter, a script of scripts/, its arguments) run in this process."""
    from hesp_hf.commands import evaluate, protocol, train

    script = Path(command[1]).name
    cli = {"train.py": train.cli, "run_evaluation.py": evaluate.cli, "run_protocol.py": protocol.cli}[script]
    done = run_cli(cli, script, *command[2:])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def metrics_of(folder):
    return json.loads((Path(folder) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference_run(tiny_data, tmp_path_factory):
    """One uninterrupted run: batch 4, 2 epochs, a checkpoint each epoch."""
    output = tmp_path_factory.mktemp("runs") / "reference"
    run(train_command(tiny_data, output, "--per_device_train_batch_size", "4", "--save_total_limit", "5"))
    return output


def test_train_writes_a_complete_checkpoint_folder(reference_run, tiny_data):
    files = {p.name for p in reference_run.iterdir()}
    expected = {
        "config.json", "model.safetensors", "video_preprocessor_config.json", "configuration_hesp.py",
        "modeling_hesp.py", "loss_hesp.py", "video_processing_hesp.py", "metrics.json", "curves.png",
        "confusion.csv", "README.md", "split.txt",
    }  # fmt: skip
    assert expected <= files
    metrics = metrics_of(reference_run)
    assert all(0 <= metrics[name] <= 1 for name in ("accuracy", "auroc", "oscr"))
    assert metrics["num_known"] == 9 and metrics["num_unknown"] == 3  # the whole test list
    config = json.loads((reference_run / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hesp.HESPForOpenSetVideoClassification"
    assert config["unknown_threshold"] == pytest.approx(metrics["unknown_threshold"])
    # Conformal calibration: the known validation clips' scores saved with the level; too few for 0.95 here, so the
    # threshold is the lowest of them and the guarantee stated is n / (n + 1) (docs/calibration.md).
    scores, conformal = config["calibration_scores"], metrics["conformal"]
    assert config["known_acceptance"] == 0.95 and scores == sorted(scores) and config["unknown_threshold"] == scores[0]
    assert conformal["calibration_clips"] == len(scores) and conformal["target_acceptance"] == 0.95
    assert conformal["guaranteed_acceptance"] == pytest.approx(len(scores) / (len(scores) + 1))
    assert conformal["test_known_clips"] == 9 and 0 <= conformal["test_acceptance"] <= 1
    assert metrics["calibration"]["temperature"] == pytest.approx(config["probability_temperature"])
    assert {"ece_before", "ece_after", "brier_before", "brier_after"} <= set(metrics["calibration"])
    assert [config["id2label"][str(i)] for i in range(4)] == ["calm", "smile", "frown", "unknown"]
    confusion = (reference_run / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "true \\ predicted,calm,smile,frown,unknown" and len(confusion) == 5
    # The recipe's head: class prototypes of the trained embedding, fitted after training and saved with the model.
    assert config["inference_logits"] == "prototypes"
    prototypes = load_file(reference_run / "model.safetensors")["class_prototypes"]
    assert prototypes.shape[0] == 3
    torch.testing.assert_close(prototypes.norm(dim=-1), torch.ones(3))
    # Each prompt branch is reported beside the model's own score; the run's validation held unknown clips (opt-in).
    assert set(metrics["branches"]) == {"clip", "reciprocal", "ensemble"}
    assert metrics["selection_saw_unknown_classes"] is True
    # The training-free baselines on the frozen CLIP, same test clips; the card names the strongest beside the model.
    assert {"nearest class prototype (cosine)", "kNN k=10 (probe's class)", "linear probe, max-softmax"} <= set(
        metrics["baselines"]
    )
    best = metrics["strongest_baseline"]
    assert best["auroc"] == max(values["auroc"] for values in metrics["baselines"].values())

    card = ModelCard.load(reference_run / "README.md")
    assert card.data.pipeline_tag == "video-classification"
    assert card.data.library_name == "transformers"
    assert card.data.license == "apache-2.0"
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert results == pytest.approx({name: metrics[name] for name in ("accuracy", "auroc", "oscr")}, abs=1e-6)
    assert "gasp" in card.text and "Bias, Risks, and Limitations" in card.text
    # Only what the Hub can resolve in the YAML: a local CLIP folder is no base_model, custom data no dataset id.
    assert card.data.base_model is None and not card.data.datasets
    assert "https://github.com/)" not in card.text and str(tiny_data[1]) not in card.text
    assert "The user's own annotated clips" in card.text and "web-scale" in card.text
    assert "## Citation" in card.text and "10.1145/3664647.3681583" in card.text
    assert "Known-ness score: the similarity to the nearest class prototype" in card.text
    assert f"strongest training-free baseline on the same frozen CLIP ({best['name']})" in card.text
    assert "Model selection saw" in card.text and "clips of the unknown classes" in card.text
    assert "What the decisions guarantee" in card.text and "out of reach" in card.text

    state = json.loads(sorted(reference_run.glob("checkpoint-*"))[-1].joinpath("trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss_known_ce" in entry]
    assert logged and all(
        math.isfinite(entry[f"loss_{term}"])
        for entry in logged
        for term in ("known_ce", "known_contrastive", "negative_clip", "negative_ce", "hybrid_ce")
    )
    assert any("eval_oscr_plus_auroc" in entry for entry in state["log_history"])  # selection on validation


def test_resume_matches_the_uninterrupted_run(reference_run, tiny_data, tmp_path, run_cli):
    """Killed after epoch 1 (its checkpoint is all that is left), restarted with `--resume_from_checkpoint True` (the
    last checkpoint in the output folder, as the transformers examples resume); the restart also recomputes
    activations in backward (--activation_checkpointing), which must not change a thing."""
    checkpoints = sorted(reference_run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    interrupted = tmp_path / "interrupted"
    shutil.copytree(checkpoints[0], interrupted / checkpoints[0].name)
    run_here(
        run_cli,
        train_command(
            tiny_data,
            interrupted,
            "--per_device_train_batch_size",
            "4",
            "--save_total_limit",
            "5",
            "--resume_from_checkpoint",
            "True",
            "--activation_checkpointing",
            "true",
        ),  # fmt: skip
    )
    resumed, reference = metrics_of(interrupted), metrics_of(reference_run)
    for name in ("accuracy", "auroc", "oscr"):
        assert resumed[name] == pytest.approx(reference[name], abs=1e-6)
    assert resumed["unknown_threshold"] == pytest.approx(reference["unknown_threshold"], rel=1e-4)


def test_two_process_ddp_matches_single_process(reference_run, tiny_data, tmp_path):
    """2 CPU processes x batch 2 against 1 process x batch 4 (the same global batch). Tolerance: 5% on the
    calibrated threshold and 0.12 (one test clip in 9) on each metric; the contrastive term is computed per process,
    and each process draws its own random frames and crops, so the runs are close but not bit-identical (measured:
    the same metrics, thresholds 1.4% apart)."""
    output = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    run(train_command(tiny_data, output, "--per_device_train_batch_size", "2", "--use_cpu", launcher=launcher))
    ddp, single = metrics_of(output), metrics_of(reference_run)
    assert ddp["world_size"] == 2 and single["world_size"] == 1  # two processes really ran
    assert ddp["num_known"] + ddp["num_unknown"] == 12  # predictions gathered over both ranks, no duplicates
    for name in ("accuracy", "auroc", "oscr"):
        assert abs(ddp[name] - single[name]) <= 0.12, (name, ddp[name], single[name])
    assert ddp["unknown_threshold"] == pytest.approx(single["unknown_threshold"], rel=0.05)
    assert not list(output.glob("*rank*"))  # only rank 0 wrote
    assert len(list(output.glob("metrics*.json"))) == 1


def test_evaluate_script_reproduces_the_test_metrics(reference_run, tiny_data, tmp_path, run_cli):
    from hesp_hf.commands.evaluate import cli as evaluate_cli

    root, _ = tiny_data
    command = [
        sys.executable, str(REPO / "scripts" / "run_evaluation.py"), "--checkpoint", str(reference_run),
        "--output_dir", str(tmp_path / "eval"), "--dataset", "custom", "--class_names", ",".join(CLASSES),
        "--known_labels", "calm,smile,frown", "--train_annotation", str(root / "train.csv"),
        "--test_annotation", str(root / "test.csv"), "--num_workers", "0", "--seed", "3", "--report_baselines", "true",
    ]  # fmt: skip
    run_here(run_cli, command)
    evaluated, trained = metrics_of(tmp_path / "eval"), metrics_of(reference_run)
    # The same split (seed 3, as trained) and the same frozen CLIP: the baselines the training run reported.
    assert evaluated["strongest_baseline"]["name"] == trained["strongest_baseline"]["name"]
    for name, values in trained["baselines"].items():
        assert evaluated["baselines"][name] == pytest.approx(values, abs=1e-6)
    for name in ("accuracy", "auroc", "oscr", "num_known", "num_unknown"):
        assert evaluated[name] == pytest.approx(trained[name], abs=1e-6)
    assert evaluated["branches"].keys() == trained["branches"].keys()
    for branch, values in trained["branches"].items():
        assert evaluated["branches"][branch] == pytest.approx(values, abs=1e-6)
    assert (tmp_path / "eval" / "curves.png").exists()
    # The checkpoint and the test annotation alone (its classes from the checkpoint and its run_arguments.json).
    alone = [
        sys.executable, str(REPO / "scripts" / "run_evaluation.py"), "--checkpoint", str(reference_run),
        "--output_dir", str(tmp_path / "alone"), "--dataset", "custom", "--test_annotation", str(root / "test.csv"),
        "--num_workers", "0",
    ]  # fmt: skip
    run_here(run_cli, alone)
    for name in ("accuracy", "auroc", "oscr", "num_known", "num_unknown"):
        assert metrics_of(tmp_path / "alone")[name] == pytest.approx(trained[name], abs=1e-6)
    again = run_cli(evaluate_cli, "run_evaluation.py", *alone[2:])
    assert again.returncode == 2 and "already holds an evaluation (metrics.json)" in again.stderr
    refused = run_cli(
        evaluate_cli, "run_evaluation.py", *alone[2:], "--report_baselines", "true", "--overwrite_output_dir"
    )
    assert refused.returncode == 2 and "--report_baselines fits the baselines on the known training clips" in (
        refused.stderr
    )


def test_run_protocol_resumes_and_tabulates(tmp_path, run_cli):
    """Splits whose metrics exist with the same train.py arguments are not trained again; the table has mean ± std
    per setting; splits finished with other arguments are refused, never reused silently."""
    from hesp_hf.commands import protocol

    train_arguments = ["--dataset", "mafw", "--clip_model", "none"]
    health = {0: {"derailed": False}, 1: {"derailed": True, "reason": "the loss became non-finite"}, 5: None}
    for index, values in {0: (0.5, 0.6, 0.3), 1: (0.7, 0.8, 0.5), 5: (0.9, 0.7, 0.6)}.items():
        folder = tmp_path / f"split-{index}"
        folder.mkdir()
        accuracy, auroc, oscr = values
        metrics = {"accuracy": accuracy, "auroc": auroc, "oscr": oscr, "split": "x: 3 known / 8 unknown"}
        if health[index]:  # split 5 from before runs reported their health
            metrics["training_health"] = health[index]
        (folder / "metrics.json").write_text(json.dumps(metrics))
        recorded = [*train_arguments, "--split_index", str(index)]
        (folder / "protocol_arguments.json").write_text(json.dumps({"train_arguments": recorded}))
    command = [sys.executable, str(REPO / "scripts" / "run_protocol.py"), "--output_dir", str(tmp_path)]
    run_here(run_cli, [*command, "--splits", "0-1,5", "--", *train_arguments])
    table = (tmp_path / "results.md").read_text()
    assert "| splits 0-4 | 3 known / 8 unknown | 2 | 60.00 ± 14.14 | 70.00 ± 14.14 | 40.00 ± 14.14 | 1 of 2 |" in table
    assert (
        "| splits 5-9 | 3 known / 8 unknown | 1 | 90.00 ± 0.00 |" in table and "| 0 of 0 (1 not recorded) |" in table
    )
    assert "Training derailed on 1 split(s) (split 1: the loss became non-finite)." in table
    assert (tmp_path / "results.csv").read_text().splitlines()[1:] == [
        "0,splits 0-4,0.5,0.6,0.3,False",
        "1,splits 0-4,0.7,0.8,0.5,True",
        "5,splits 5-9,0.9,0.7,0.6,",
    ]

    before = (tmp_path / "results.md").stat().st_mtime_ns
    other = [*train_arguments, "--num_train_epochs", "5"]
    done = run_cli(protocol.cli, "run_protocol.py", *command[2:], "--splits", "0-1,5", "--", *other)
    assert done.returncode == 2 and "splits [0, 1, 5]" in done.stderr and "--rerun_changed" in done.stderr
    assert (tmp_path / "results.md").stat().st_mtime_ns == before


def test_protocol_split_indices_are_checked_before_any_training():
    from hesp_hf.commands.protocol import check_released_splits, parse_splits

    assert parse_splits("0-2,7") == [0, 1, 2, 7]
    assert parse_splits("5, 3-4,5") == [5, 3, 4]  # order kept, repeats dropped
    for bad in ("a", "3-1", "0-", "-2", ",", "0-x"):
        with pytest.raises(ValueError, match="--splits"):
            parse_splits(bad)
    check_released_splits(list(range(20)), ["--dataset", "mafw"])  # MAFW releases 20 lists
    with pytest.raises(ValueError, match=r"--splits \[20, 21\] are not released lists of 'dfew': it has splits 0-19"):
        check_released_splits([0, 20, 21], ["--dataset=dfew", "--fold", "1"])
    for dataset in ("ferv39k", "custom"):
        with pytest.raises(ValueError, match="no released open-set lists.*--known_lists"):
            check_released_splits([0], ["--dataset", dataset])
    check_released_splits([99], ["--clip_model", "none"])  # no --dataset: train.py says what is missing


def test_protocol_options_and_known_lists_are_checked_before_any_training(tmp_path):
    import argparse

    from hesp_hf.commands.protocol import check_known_lists, check_protocol_options

    def options(**given):
        values = {"known_lists": None, "random_splits": 0, "splits": None, "num_known": 0} | given
        return argparse.Namespace(**values)

    check_protocol_options(options(splits="0-4"))
    check_protocol_options(options(random_splits=3, num_known=2))
    for given, message in (
        ({"known_lists": tmp_path / "l.txt", "random_splits": 3}, "give one of them"),
        ({"random_splits": 3, "num_known": 2, "splits": "0-4"}, "leave it out"),
        ({"num_known": 2}, "give --random_splits too"),
        ({"random_splits": -1, "num_known": 2}, r"^--random_splits must be a count >= 0, got -1\.$"),
        ({"random_splits": 3, "num_known": -2}, r"^--num_known must be a count >= 0, got -2\.$"),
    ):
        with pytest.raises(ValueError, match=message):
            check_protocol_options(options(**given))
    custom = ["--dataset", "custom", "--class_names", "calm", "smile", "frown"]
    check_known_lists([["calm", "smile"], ["frown"]], tmp_path / "l.txt", custom)
    with pytest.raises(ValueError, match=r"l.txt, list 2 \(calm, smlie\): \['smlie'\] are not classes of 'custom'"):
        check_known_lists([["calm"], ["calm", "smlie"]], tmp_path / "l.txt", custom)
    with pytest.raises(ValueError, match="named twice"):
        check_known_lists([["calm", "calm"]], tmp_path / "l.txt", custom)
    with pytest.raises(ValueError, match="not classes of 'mafw'"):
        check_known_lists([["happy"]], tmp_path / "l.txt", ["--dataset", "mafw"])  # MAFW says happiness
    with pytest.raises(ValueError, match="holds no known-class list"):
        check_known_lists([], tmp_path / "l.txt", custom)


def test_run_protocol_on_custom_known_lists(tmp_path, run_cli):
    """Custom data has no released lists: a file of known-class lists, or seeded random ones, grouped by size."""
    from hesp_hf.commands import protocol

    names = ["calm", "smile", "frown", "gasp", "sneer"]
    lists = protocol.random_known_lists(names, 4, 2, seed=3)
    assert lists == protocol.random_known_lists(names, 4, 2, seed=3) != protocol.random_known_lists(names, 4, 2, 4)
    assert len({tuple(x) for x in lists}) == 4 and all(len(x) == 2 and x == sorted(x, key=names.index) for x in lists)
    with pytest.raises(ValueError, match="fewer than 11 distinct ways"):
        protocol.random_known_lists(names, 11, 2, seed=0)
    # train.py's class names as the command line gives them, in each of its forms.
    for given in (["--class_names", *names], ["--class_names", ",".join(names)], [f"--class_names={','.join(names)}"]):
        assert (
            protocol.option_values(["--dataset", "custom", *given, "--clip_model", "none"], "--class_names") == names
        )
    assert protocol.option_values(["--class_names", "a", "b", "--class_names", "c"], "--class_names") == ["c"]
    assert protocol.option_values(["--dataset", "custom"], "--class_names") == []

    train_arguments = ["--dataset", "custom", "--class_names", ",".join(names), "--clip_model", "none"]
    (tmp_path / "lists.txt").write_text("calm,smile\ncalm,frown\ncalm,smile,gasp\n")
    for index, (known, auroc) in enumerate([("calm,smile", 0.6), ("calm,frown", 0.8), ("calm,smile,gasp", 0.7)]):
        folder = tmp_path / f"split-{index}"
        folder.mkdir()
        metrics = {"accuracy": 0.9, "auroc": auroc, "oscr": 0.5, "split": "custom: x known / y unknown"}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        recorded = [*train_arguments, "--known_labels", known]
        (folder / "protocol_arguments.json").write_text(json.dumps({"train_arguments": recorded}))
    command = [sys.executable, str(REPO / "scripts" / "run_protocol.py"), "--output_dir", str(tmp_path)]
    run_here(run_cli, [*command, "--known_lists", str(tmp_path / "lists.txt"), "--", *train_arguments])
    table = (tmp_path / "results.md").read_text()
    assert "| 2 known | x known / y unknown | 2 | 90.00 ± 0.00 | 70.00 ± 14.14 | 50.00 ± 0.00 |" in table
    assert "| 3 known | x known / y unknown | 1 | 90.00 ± 0.00 | 70.00 ± 0.00 |" in table


def test_finished_runs_are_never_overwritten_by_accident(reference_run, tiny_data, tmp_path, run_cli):
    """train.py into a folder holding a run, and run_evaluation.py into a trained folder, stop before touching anything."""
    from hesp_hf.commands import evaluate, train

    before = {p: p.stat().st_mtime_ns for p in reference_run.rglob("*") if p.is_file()}
    command = train_command(tiny_data, reference_run, "--per_device_train_batch_size", "4")
    done = run_cli(train.cli, "train.py", *command[2:])
    assert done.returncode != 0 and "already holds a run" in done.stderr and "--overwrite_output_dir" in done.stderr
    root, _ = tiny_data
    arguments = [
        "--checkpoint", str(reference_run), "--output_dir", str(reference_run), "--dataset", "custom",
        "--class_names", ",".join(CLASSES), "--known_labels", "calm,smile,frown",
        "--train_annotation", str(root / "train.csv"), "--test_annotation", str(root / "test.csv"),
    ]  # fmt: skip
    done = run_cli(evaluate.cli, "run_evaluation.py", *arguments)
    assert done.returncode != 0 and "never writes over training outputs" in done.stderr
    assert {p: p.stat().st_mtime_ns for p in reference_run.rglob("*") if p.is_file()} == before

    from hesp_hf.run.outputs import check_output_dir

    copy = tmp_path / "old-run"
    shutil.copytree(reference_run, copy)
    check_output_dir(copy, overwrite=True, resuming=False)  # replacing: the old checkpoints go
    assert not list(copy.glob("checkpoint-*")) and (copy / "config.json").exists()
    check_output_dir(tmp_path / "new", overwrite=False, resuming=False)  # a new folder is fine


def test_resume_argument_resolves_to_a_checkpoint(tmp_path):
    from hesp_hf.run.outputs import resolve_resume

    assert resolve_resume(None, tmp_path) is None and resolve_resume("false", tmp_path) is None
    assert resolve_resume("runs/x/checkpoint-3", tmp_path) == "runs/x/checkpoint-3"
    with pytest.raises(ValueError, match="no checkpoint-\\* folder"):
        resolve_resume("True", tmp_path)
    for step in (2, 10, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert resolve_resume(True, tmp_path) == str(tmp_path / "checkpoint-10")


def test_model_card_names_the_backbone_only_as_the_hub_knows_it(tmp_path):
    import json as json_module

    from hesp_hf.embedded.defaults import embedded_clip_path
    from hesp_hf.hub.model_card import describe_backbone

    hub = describe_backbone("openai/clip-vit-base-patch32")
    assert (hub.hub_id, hub.synthetic) == ("openai/clip-vit-base-patch32", False)
    embedded = describe_backbone(embedded_clip_path())
    assert embedded.hub_id is None and embedded.synthetic and "synthetic" in embedded.description
    downloaded = tmp_path / "clip-download"
    downloaded.mkdir()
    (downloaded / "config.json").write_text(json_module.dumps({"_name_or_path": "openai/clip-vit-base-patch16"}))
    assert describe_backbone(str(downloaded)).hub_id == "openai/clip-vit-base-patch16"
    own = tmp_path / "my-clip"
    own.mkdir()
    (own / "config.json").write_text(json_module.dumps({"_name_or_path": str(tmp_path / "elsewhere")}))
    assert describe_backbone(str(own)).hub_id is None
    assert str(tmp_path) not in describe_backbone(str(own)).description


@pytest.mark.parametrize("model_auroc", [0.95, 0.85])
def test_model_card_puts_the_model_beside_the_strongest_baseline(model_auroc):
    """Above the baseline the card says so; below it, it says plainly that a training-free score ranks better."""
    from hesp_hf.hub.model_card import BackboneInfo, render_model_card

    metrics = {
        "accuracy": 0.9, "auroc": model_auroc, "oscr": 0.8, "fpr_at_95_tpr": 0.3, "num_known": 10, "num_unknown": 5,
        "strongest_baseline": {"name": "nearest class prototype (cosine)", "accuracy": 0.8, "auroc": 0.9, "oscr": 0.7},
    }  # fmt: skip
    card = render_model_card(
        repo_id="org/x", backbone=BackboneInfo(None, "a CLIP", False), dataset_name="custom", data_description="d",
        synthetic_data=False, known_labels=["a", "b"], unknown_labels=["c"], metrics=metrics, split_description="s",
        training_summary="t", temporal_pooling="mean", threshold=0.5, keep_share=0.95, known_ness="k",
    )  # fmt: skip
    row = "| strongest training-free baseline on the same frozen CLIP (nearest class prototype (cosine)): "
    assert row + "ACC / AUROC / OSCR | 0.8000 / 0.9000 / 0.7000 |" in card.text
    loses = "ranks unknown clips worse than a score that needs no training" in card.text
    assert loses == (model_auroc < 0.9)
    assert ("Every training-free baseline" in card.text) == (model_auroc >= 0.9)


def test_calibration_keeps_the_requested_share():
    rng = np.random.default_rng(0)
    for size in (1, 7, 20, 101, 1000):
        scores = rng.normal(size=size)
        for keep in (0.5, 0.9, 0.95, 1.0):
            threshold = calibrate_threshold(scores, keep)
            accepted = np.mean(scores >= threshold)
            assert accepted >= keep - 1e-12
            # the highest such threshold: the next higher score would accept too few
            higher = np.sort(scores)[np.sort(scores) > threshold]
            if higher.size:
                assert np.mean(scores >= higher[0]) < keep
    with pytest.raises(ValueError, match="keep_share"):
        calibrate_threshold([1.0], 0.0)


def test_schedule_and_normalized_prompt_step():
    assert [multistep_factor(e, (30, 60, 90), 0.1) for e in (0, 29.9, 30, 61, 95)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.001]
    )
    pixel, other = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    optimizer = PromptSGD(
        [{"params": [other]}, {"params": [pixel], "normalized_step": 50.0, "weight_decay": 0.0}], lr=0.1
    )
    pixel.grad, other.grad = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([1.0, -1.0])
    optimizer.step()
    torch.testing.assert_close(pixel.detach(), torch.tensor([-30.0, 0.0, -40.0]))  # -50 * g / ||g||
    torch.testing.assert_close(other.detach(), torch.tensor([-0.1, 0.1]))  # plain SGD
    assert pixel.grad is not None  # gradients are left as they were


def test_augmentation_choices():
    from types import SimpleNamespace

    from hesp_hf.run.setup import make_augmentation

    assert make_augmentation(SimpleNamespace(augmentation="none"), (32, 32)) is None
    flip = make_augmentation(SimpleNamespace(augmentation="flip"), (32, 32))
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    out = flip(frames)
    original = torch.as_tensor(frames).permute(0, 3, 1, 2)
    assert torch.equal(out, original) or torch.equal(out, original.flip(-1))  # no crop, no resize
    crop = make_augmentation(SimpleNamespace(augmentation="flip_crop", crop_scale_min=0.08), (32, 32))
    assert crop.scale == (0.08, 1.0)
    with pytest.raises(ValueError, match="flip_crop, flip or none"):
        make_augmentation(SimpleNamespace(augmentation="mixup"), (32, 32))


def test_command_line_errors_are_one_clear_message(tiny_data, tmp_path, run_cli):
    """A flag prefix is not taken for the flag, a typo is answered in two lines, and a bad value is one line naming
    it, without a traceback (HESP_DEBUG=1 shows one)."""
    from hesp_hf.commands.train import cli

    base = train_command(tiny_data, tmp_path / "run")[2:]
    done = run_cli(cli, "train.py", *base, "--num_train_epoch", "3")
    assert done.returncode == 2 and "not used" in done.stderr and "'--num_train_epoch'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2
    done = run_cli(cli, "train.py", *base, "--recipe", "best")
    assert "--recipe: invalid choice: 'best' (choose from 'hesp-hf', 'paper')" in done.stderr
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 2
    # A value the library checks (not argparse): one line naming it; HESP_DEBUG=1 raises it instead.
    done = run_cli(cli, "train.py", *base, "--loss_weights", "bogus")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 2
    first, hint = done.stderr.strip().splitlines()
    assert first.startswith("train.py: error: --loss_weights") and "'bogus'" in first and "HESP_DEBUG" in hint
    with pytest.raises(ValueError, match="--loss_weights"):
        run_cli(cli, "train.py", *base, "--loss_weights", "bogus", env={"HESP_DEBUG": "1"})
    # A value HESPConfig's own validators refuse: its sentence alone, not the strict dataclass's wrapper.
    done = run_cli(cli, "train.py", *base, "--num_frames", "0")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 2, done.stderr
    assert done.stderr.startswith("train.py: error: HESPConfig.num_frames must be >= 1, got 0."), done.stderr
    (tmp_path / "afile").write_text("notes")
    at_file = train_command(tiny_data, tmp_path / "afile")[2:]
    done = run_cli(cli, "train.py", *at_file)
    assert done.returncode == 2 and f"--output_dir {tmp_path / 'afile'} is a file: give a folder" in done.stderr
    assert (tmp_path / "afile").read_text() == "notes"
    assert not (tmp_path / "run").exists()


def test_console_commands_are_installed(run_cli):
    """A pip user gets the scripts as commands (the same code: `hesp_hf.commands`): every command of the package's
    metadata is installed next to this Python and answers --help; one is started as the user starts it."""
    from importlib.metadata import distribution

    commands = [point for point in distribution("hesp-hf").entry_points if point.group == "console_scripts"]
    assert {point.name for point in commands} >= {"hesp-train", "hesp-evaluate", "hesp-protocol", "hesp-predict"}
    for point in commands:
        executable = Path(sys.executable).parent / point.name
        assert executable.exists(), f"{point.name} is not installed next to {sys.executable}: reinstall the package."
        assert point.value.startswith("hesp_hf.commands.")
        done = run_cli(point.load(), point.name, "--help")
        assert done.returncode == 0 and f"usage: {point.name}" in done.stdout, point.name
    done = subprocess.run([str(Path(sys.executable).parent / "hesp-train"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: hesp-train" in done.stdout


def test_skipped_clips_are_counted_per_split_by_train_and_evaluate(tiny_data, tmp_path, run_cli):
    """Undecodable clips in every split, batch size 1 (so whole batches are bad): training finishes, and
    metrics.json counts distinct clips per split -- the same again on a second run into the folder -- as does
    run_evaluation.py; truncated clips are counted apart from skipped ones."""
    root, clip = tiny_data
    data = tmp_path / "data"
    shutil.copytree(root, data)
    broken = {"train": ["clips/train_calm_0.mp4", "clips/train_smile_1.mp4", "clips/train_gasp_2.mp4"]}
    broken["test"] = ["clips/test_frown_0.mp4", "clips/test_gasp_1.mp4"]
    for paths in broken.values():
        for name in paths:
            (data / name).write_text("this download was interrupted\n")
    whole = write_video(data / "long.mp4", np.random.default_rng(1).integers(0, 255, (75, 40, 40, 3), np.uint8))
    write_video(whole, np.random.default_rng(1).integers(0, 255, (75, 40, 40, 3), np.uint8),
                container_options={"movflags": "faststart"})  # fmt: skip
    (data / "clips" / "test_calm_2.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    output = tmp_path / "run"
    command = train_command(
        (data, clip), output, "--per_device_train_batch_size", "1", "--num_train_epochs", "1",
        "--on_bad_clip", "skip", "--overwrite_output_dir",
    )  # fmt: skip
    for _ in range(2):  # a second run into the same folder starts a fresh count
        run_here(run_cli, command)
        metrics = metrics_of(output)
        skipped = metrics["skipped_clips"]
        assert skipped["train"] + skipped["validation"] == 3 and skipped["test"] == 2
        assert metrics["truncated_clips"] == {"train": 0, "validation": 0, "test": 1}
        assert (output / "clip_report.tsv").exists()
    evaluate = [
        sys.executable, str(REPO / "scripts" / "run_evaluation.py"), "--checkpoint", str(output),
        "--output_dir", str(tmp_path / "eval"), "--dataset", "custom", "--class_names", ",".join(CLASSES),
        "--test_annotation", str(data / "test.csv"), "--on_bad_clip", "skip", "--on_truncated_clip", "skip",
    ]  # fmt: skip
    run_here(run_cli, evaluate)
    evaluated = metrics_of(tmp_path / "eval")
    assert evaluated["skipped_clips"] == {"test": 3} and evaluated["truncated_clips"] == {"test": 0}
    assert evaluated["test_clips"] == 12


def test_python_api_trains_like_the_script(reference_run, tiny_data, tmp_path):
    """`hesp_hf.train(**options)` in this process, with Python values (lists of class names), gives the script's
    run: the same metrics and threshold; an option no argument class has is refused with the closest names."""
    import hesp_hf

    root, clip = tiny_data
    options = dict(
        dataset="custom", class_names=CLASSES, known_labels=["calm", "smile", "frown"],
        train_annotation=str(root / "train.csv"), test_annotation=str(root / "test.csv"), clip_model=str(clip),
        num_frames=4, num_train_epochs=2, per_device_eval_batch_size=4, validation_fraction=0.2,
        validation_unknown_fraction=0.5, logging_steps=1, seed=3, learning_rate=0.05, milestones="1",
        temporal_pooling="attention", dataloader_num_workers=0, per_device_train_batch_size=4, save_total_limit=5,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script ran (OMP_NUM_THREADS=1)
    try:
        result = hesp_hf.train(output_dir=str(tmp_path / "api"), **options)
    finally:
        torch.set_num_threads(threads)
    reference = metrics_of(reference_run)
    assert result.output_dir == tmp_path / "api" and metrics_of(result.output_dir)["auroc"] == result.metrics["auroc"]
    for name in ("accuracy", "auroc", "oscr", "num_known", "num_unknown"):
        assert result.metrics[name] == pytest.approx(reference[name], abs=1e-6), name
    assert result.metrics["unknown_threshold"] == pytest.approx(reference["unknown_threshold"], rel=1e-4)
    with pytest.raises(TypeError, match="num_train_epoch .*did you mean num_train_epochs"):
        hesp_hf.train(output_dir=str(tmp_path / "typo"), num_train_epoch=2, **options)


def test_a_run_made_to_derail_says_so(tiny_data, tmp_path, run_cli):
    """A learning rate far too large: the run reports itself derailed in metrics.json, the log and the card."""
    output = tmp_path / "derailed"
    done = run_here(
        run_cli,
        train_command(
            tiny_data,
            output,
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "5000",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ),
    )
    health = metrics_of(output)["training_health"]
    assert health["derailed"] is True and health["reason"] and health["advice"]
    assert len(health["epochs"]) == 2 and {"loss", "training_accuracy"} <= set(health["epochs"][0])
    assert "Training derailed" in done.log
    card = ModelCard.load(Path(output) / "README.md").text
    assert "This training run derailed" in card


def test_a_healthy_run_reports_its_trajectory(reference_run):
    health = metrics_of(reference_run)["training_health"]
    assert set(health) >= {"derailed", "reason", "training_accuracy", "loss", "advice", "epochs"}
    assert [record["epoch"] for record in health["epochs"]] == [1, 2]
    assert all(0 <= record["training_accuracy"] <= 1 for record in health["epochs"])
    # The hesp-hf recipe trains no visual prompt.
    assert [record["visual_prompt_max_change"] for record in health["epochs"]] == [None, None]
