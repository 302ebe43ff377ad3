"""Slow (`pytest -m slow tests`): the recommended recipe on the setting where the old one collapsed.

Data seed 1 of the synthetic protocol (30 training clips per class), training seed 1: with the old recipe's plain
shuffle the first batch held 10 `disgust` clips and 2 `sadness`, and training ended at CLIP-branch AUROC 0.56-0.58
(other orders: 0.71-0.89). The hesp-hf recipe draws class-stratified batches instead, so no first batch can be one
class (tested exactly in test_trainer.py); here the whole run must stay above AUROC 0.75 with its default order and
with another one (`--data_seed 2` reseeds the sampler), the ensemble must not fall behind its CLIP branch, and the
model's prototype head must not fall below the strongest training-free baseline on the frozen CLIP.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hesp_hf.commands.train import options_argv
from hesp_hf.embedded.defaults import synthetic_training_options
from hesp_hf.embedded.synthetic import SyntheticSpec, write_synthetic_dataset


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("order", [[], ["--data_seed", "2"]], ids=["default-order", "data-seed-2"])
def test_recommended_recipe_survives_the_collapsing_order(tmp_path, order):
    data = write_synthetic_dataset(REPO / "outputs" / "synthetic", SyntheticSpec(train_per_class=30, seed=1))
    output = tmp_path / "run"
    command = [
        sys.executable, str(REPO / "scripts" / "train.py"), *options_argv(synthetic_training_options(data, output, 12, seed=1)),
        "--eval_strategy", "no", "--save_strategy", "no", *order,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["auroc"] >= 0.75, metrics
    assert metrics["branches"]["ensemble"]["auroc"] >= metrics["branches"]["clip"]["auroc"] - 0.05, metrics
    assert metrics["auroc"] >= metrics["strongest_baseline"]["auroc"] - 0.01, metrics


FAILING_LIST = "fear,happiness,surprise,contempt,helplessness,disappointment"


@pytest.mark.slow
def test_the_list_where_the_visual_prompt_derailed_trains_with_the_recipe(tmp_path):
    """Data seed 0, training seed 0, the known list where the paper's visual prompt derails the training (the trained
    embedding classifies the known training clips worse than the frozen CLIP: leave-one-out 0.65-0.68 against 0.91,
    bounded or not): the run says it derailed. The hesp-hf recipe (no visual prompt) trains on the same list and data,
    and beats the strongest baseline."""
    data = write_synthetic_dataset(REPO / "outputs" / "synthetic", SyntheticSpec(train_per_class=30, seed=0))
    results = {}
    for name, extra in {"recipe": [], "paper-prompt": ["--use_visual_prompt", "true"]}.items():
        output = tmp_path / name
        options = synthetic_training_options(data, output, 12, seed=0, known_labels=FAILING_LIST.split(","))
        command = [
            sys.executable, str(REPO / "scripts" / "train.py"), *options_argv(options),
            "--eval_strategy", "no", "--save_strategy", "no", *extra,
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads((output / "metrics.json").read_text())
    assert results["paper-prompt"]["training_health"]["derailed"], results["paper-prompt"]["training_health"]
    assert "--use_visual_prompt false" in results["paper-prompt"]["training_health"]["advice"]
    recipe = results["recipe"]
    assert not recipe["training_health"]["derailed"], recipe["training_health"]
    assert recipe["prototype_space"] == "trained"
    assert recipe["auroc"] >= recipe["strongest_baseline"]["auroc"] + 0.02, recipe
