"""Open-set metrics against references written here from the definitions, golden values and scikit-learn."""

import json
import os

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from hesp_hf.metrics import (
    known_class_predictions,
    load_oscr_metric,
    open_set_curves,
    open_set_metrics,
    plot_open_set_curves,
    trainer_compute_metrics,
)


def slow_oscr(logits, references, unknown_label=-1):
    """OSCR straight from its definition: every distinct score is a threshold; trapezoids from (0, 0)."""
    scores = logits.max(axis=1)
    predicted = logits.argmax(axis=1)
    known = [i for i in range(len(references)) if references[i] != unknown_label]
    unknown = [i for i in range(len(references)) if references[i] == unknown_label]
    points = [(0.0, 0.0)]
    for t in sorted(set(scores.tolist()), reverse=True):
        ccr = sum(1 for i in known if predicted[i] == references[i] and scores[i] >= t) / len(known)
        fpr = sum(1 for i in unknown if scores[i] >= t) / len(unknown)
        points.append((fpr, ccr))
    return sum((x1 - x0) * (y1 + y0) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False))


def random_problem(seed, n=300, k=4, decimals=None):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    references = rng.integers(0, k, n)
    references[rng.random(n) < 0.35] = -1
    logits[references >= 0, references[references >= 0]] += 1.0  # some signal
    if decimals is not None:
        logits = np.round(logits, decimals)  # heavy ties
    return logits, references


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oscr_equals_the_definition(seed, decimals):
    logits, references = random_problem(seed, decimals=decimals)
    before = logits.copy(), references.copy()
    result = open_set_metrics(logits, references)
    assert result["oscr"] == pytest.approx(slow_oscr(logits, references), abs=1e-12)
    np.testing.assert_array_equal(logits, before[0])  # inputs untouched
    np.testing.assert_array_equal(references, before[1])


@pytest.mark.parametrize("decimals", [None, 1])
def test_auroc_and_accuracy(decimals):
    logits, references = random_problem(5, n=700, decimals=decimals)
    result = open_set_metrics(logits, references)
    known = references != -1
    assert result["auroc"] == pytest.approx(roc_auc_score(known, logits.max(axis=1)), abs=1e-12)
    assert result["accuracy"] == pytest.approx(np.mean(logits[known].argmax(1) == references[known]), abs=1e-15)
    assert result["num_known"] == known.sum() and result["num_unknown"] == (~known).sum()
    by_softmax = open_set_metrics(logits, references, score="max_softmax")
    if decimals is None:
        softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        assert by_softmax["auroc"] == pytest.approx(roc_auc_score(known, softmax.max(1)), abs=1e-12)
    else:  # rows holding the same logits in another order must tie exactly
        rows = np.array([[0.1, 0.7, 0.3], [0.3, 0.1, 0.7], [0.7, 0.3, 0.1], [0.2, 0.2, 0.9]])
        scores, _, _ = known_class_predictions(np.tile(rows, (2, 1)), [0] * 4 + [-1] * 4, score="max_softmax")
        assert scores[0] == scores[1] == scores[2] != scores[3]


def golden_inputs(n_known, n_unknown, k, shift):
    """Deterministic, tie-free logits (no random generator, so the golden values never drift)."""
    n = n_known + n_unknown
    cells = np.arange(n * k).reshape(n, k)
    logits = ((cells * 7919 + shift) % 10007) / 10007.0
    logits[n_known:] *= 0.8
    labels = (np.arange(n_known) * 31 + shift) % k
    return logits, np.r_[labels, -np.ones(n_unknown, dtype=int)]


# OSCR of the published reference implementation (ARPL `compute_oscr`) on `golden_inputs`, computed once.
ARPL_GOLDEN = [
    ((40, 25, 3, 1), 0.29600000000000004),
    ((100, 60, 5, 7), 0.21000000000000013),
    ((7, 5, 2, 3), 0.6285714285714286),
    ((300, 200, 7, 13), 0.14000000000000046),
]


@pytest.mark.parametrize(("args", "reference_oscr"), ARPL_GOLDEN)
def test_oscr_within_one_sample_of_the_reference_implementation(args, reference_oscr):
    logits, references = golden_inputs(*args)
    assert len(np.unique(logits.max(1))) == len(logits)  # tie-free
    ours = open_set_metrics(logits, references)["oscr"]
    assert ours == pytest.approx(slow_oscr(logits, references), abs=1e-12)
    assert abs(ours - reference_oscr) <= 1.0 / args[0] + 1e-12


def test_perfect_separation():
    rng = np.random.default_rng(0)
    references = np.r_[rng.integers(0, 3, 50), -np.ones(30, dtype=int)]
    logits = rng.normal(size=(80, 3))
    logits[50:] -= 10.0  # unknown clips score far lower
    result = open_set_metrics(logits, references)
    assert result["auroc"] == pytest.approx(1.0, abs=1e-12)
    assert result["fpr_at_95_tpr"] == 0.0
    assert result["oscr"] == pytest.approx(result["accuracy"], abs=1e-12)


def test_hand_computed_example():
    # known: (score 0.9, correct), (0.7, wrong), (0.5, correct); unknown: 0.8, 0.4.
    logits = np.array([[0.9, 0.0], [0.0, 0.7], [0.5, 0.1], [0.8, 0.2], [0.4, 0.3]])
    references = np.array([0, 0, 0, -1, -1])
    # points (FPR, CCR): (0,0) (0,1/3) (1/2,1/3) (1/2,1/3) (1/2,2/3) (1,2/3) -> area 1/6 + 1/3 = 1/2
    result = open_set_metrics(logits, references)
    assert result["oscr"] == pytest.approx(0.5, abs=1e-15)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["auroc"] == pytest.approx(4 / 6)  # pairs (known > unknown): 0.9>both, 0.7>0.4, 0.5>0.4
    curves = open_set_curves(logits, references)
    np.testing.assert_allclose(curves.oscr_fpr, [0, 0, 0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(curves.oscr_ccr, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])


def test_model_logits_with_unknown_column():
    logits, references = random_problem(3)
    with_column = np.c_[logits, np.full(len(logits), 100.0)]  # would dominate if it were scored
    assert open_set_metrics(with_column, references, has_unknown_column=True) == open_set_metrics(logits, references)


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        (np.zeros((3, 2)), np.array([0, -1]), {}, "one value per prediction row"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), np.array([0, -1]), {}, "NaN or infinite"),
        (np.array([[0.1, np.inf], [0.2, 0.3]]), np.array([0, -1]), {}, "NaN or infinite"),
        (np.zeros((3, 2)), np.array([0, 2, -1]), {}, r"outside 0..1 .*\[2\]"),
        (np.zeros((3, 2)), np.array([0, -5, -1]), {}, r"outside 0..1 .*\[-5\]"),
        (np.zeros((2, 2)), np.array([0, 1]), {}, "no unknown clip"),
        (np.zeros((2, 2)), np.array([-1, -1]), {}, "no known clip"),
        (np.zeros((2, 2)), np.array([0, -1]), {"score": "entropy"}, "score must be one of"),
        (np.zeros(4), np.array([0, -1, 0, 0]), {}, "2-D"),
        (np.zeros((2, 2)), np.array([0, 1]), {"unknown_label_id": 1}, "collides"),
    ],
)
def test_bad_input_raises(predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        open_set_metrics(predictions, references, **kwargs)


def test_evaluate_module_reads_the_old_unknown_label_name_with_a_warning():
    logits = np.array([[2.0, 0.1], [0.2, 1.5], [0.3, 0.2], [1.0, 0.0]])
    references = np.array([0, 1, 7, 7])
    expected = open_set_metrics(logits, references, unknown_label_id=7)
    with pytest.warns(FutureWarning, match="unknown_label_id"):
        old = load_oscr_metric().compute(predictions=logits, references=references, unknown_label=7)
    assert old == pytest.approx(expected) and expected["num_unknown"] == 2


def test_evaluate_module_batches_and_trainer_hook():
    import hesp_hf

    small, small_references = random_problem(3, n=40)  # the loader is exported at the top level too
    assert hesp_hf.load_oscr_metric().compute(predictions=small, references=small_references) == pytest.approx(
        open_set_metrics(small, small_references)
    )
    metric = load_oscr_metric()
    logits, references = random_problem(4, n=120)
    for start in range(0, 120, 50):
        metric.add_batch(predictions=logits[start : start + 50], references=references[start : start + 50])
    assert metric.compute() == pytest.approx(open_set_metrics(logits, references))
    import evaluate

    direct = evaluate.load(str(__import__("hesp_hf").metrics.OSCR_METRIC_PATH))
    result = direct.compute(predictions=logits, references=references, score="max_softmax")
    assert result == pytest.approx(open_set_metrics(logits, references, score="max_softmax"))

    from transformers import EvalPrediction

    model_logits = np.c_[logits, np.zeros(len(logits))]
    prediction = EvalPrediction(predictions=(model_logits, logits.max(1)), label_ids=references)
    expected = open_set_metrics(logits, references)
    assert trainer_compute_metrics()(prediction) == {
        **expected,
        "oscr_plus_auroc": expected["oscr"] + expected["auroc"],
    }
    known = references != -1
    known_only = EvalPrediction(predictions=(model_logits[known],), label_ids=references[known])
    assert trainer_compute_metrics()(known_only) == {"accuracy": expected["accuracy"], "num_known": int(known.sum())}


def test_plot_writes_a_png(tmp_path):
    logits, references = random_problem(6)
    path = plot_open_set_curves(logits, references, tmp_path / "curves" / "test.png", title="split 1")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["test.png"]  # no temporary left behind


def test_library_calls_leave_global_state_alone(tmp_path):
    """Drawing the curves keeps the caller's matplotlib backend; writing a tiny CLIP keeps torch's random state."""
    import matplotlib

    from hesp_hf.embedded.tiny_clip import save_tiny_clip
    from hesp_hf.metrics.plots import plot_open_set_curves

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend the library has no reason to pick itself
    try:
        rng = np.random.default_rng(0)
        logits, labels = rng.normal(size=(40, 4)), np.r_[rng.integers(0, 3, 30), -np.ones(10, dtype=int)]
        assert plot_open_set_curves(logits, labels, tmp_path / "curves.png").stat().st_size > 0
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    save_tiny_clip(tmp_path / "tiny")
    assert torch.equal(torch.rand(3), expected)


def test_protocol_and_quality_tables_by_hand():
    """The two summary tables on hand-computable numbers: mean ± sample std, in percent for the protocol."""
    from hesp_hf.commands.protocol import summarize
    from hesp_hf.evaluation.report import seed_table

    run = lambda acc, auroc, oscr: {"accuracy": acc, "auroc": auroc, "oscr": oscr, "split": "x: a,b"}  # noqa: E731
    markdown, table = summarize({0: run(0.5, 0.6, 0.3), 1: run(0.7, 0.8, 0.5)}, setting={0: "s", 1: "s"})
    lines = markdown.splitlines()
    assert lines[0].startswith("| setting | known/unknown | splits |") and lines[1].startswith("| --- |")
    # ACC: mean 60.00, sample std of (50, 70) = 14.14
    # Runs from before training health was recorded: counted as not recorded.
    assert lines[2] == "| s | a,b | 2 | 60.00 ± 14.14 | 70.00 ± 14.14 | 40.00 ± 14.14 | 0 of 0 (2 not recorded) |"
    assert table.splitlines()[0] == "split,setting,accuracy,auroc,oscr,derailed"
    markdown, _ = seed_table({"hesp": {0: [run(0.5, 0.6, 0.3), run(0.7, 0.8, 0.5)], 1: [run(0.9, 0.9, 0.9)]}}, [0, 1])
    # data seed 0: 0.700 ± 0.141 (min 0.600); seed 1: one run; then the mean over seeds of the per-seed means
    assert markdown.splitlines()[2] == "| hesp | 0.700 ± 0.141 (min 0.600) | 0.900 | 0.750 | 0.800 | 0.650 |"


def test_the_oscr_folder_loads_offline_on_its_own_with_its_card(tmp_path):
    """The folder is an `evaluate` module as a Space would hold it: copied away from the package, loaded with every
    Hugging Face library offline, it computes what `open_set_metrics` computes; its card has evaluate's sections."""
    import shutil
    import subprocess
    import sys

    from hesp_hf.metrics import OSCR_METRIC_PATH

    folder = tmp_path / "oscr"
    shutil.copytree(OSCR_METRIC_PATH, folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert {"oscr.py", "README.md", "requirements.txt"} <= {p.name for p in folder.iterdir()}
    script = (
        "import evaluate, json\n"
        f"metric = evaluate.load({str(folder)!r})\n"
        "print(json.dumps(metric.compute(predictions=[[2.0, 0.1, 0.0], [0.2, 0.9, 0.0], [1.2, 0.3, 0.0]],"
        " references=[0, 1, 7], unknown_label_id=7, has_unknown_column=True)))\n"
    )
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, **offline}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # By hand: the unknown clip (max logit 1.2) lies between the two known ones (2.0, 0.9), both classified right.
    assert (result["accuracy"], result["auroc"], result["oscr"]) == (1.0, 0.5, 0.5)

    card = (folder / "README.md").read_text()
    sections = [line for line in card.splitlines() if line.startswith("#")]
    for heading in (
        "## Metric Description",
        "## How to Use",
        "### Inputs",
        "### Output Values",
        "### Examples",
        "## Limitations and Bias",
        "## Citation",
    ):
        assert heading in sections, heading
    requirements = (folder / "requirements.txt").read_text().split()
    assert {line.split(">")[0] for line in requirements} == {"evaluate", "datasets", "numpy", "scikit-learn"}
