"""Calibrated decisions: the split conformal threshold and p-values by hand, re-deciding at another level, temperature
scaling, ECE / Brier by hand, old checkpoints without saved scores, and one-line errors for bad levels."""

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hesp_hf import HESPVideoProcessor
from hesp_hf.calibration import (
    acceptance_spread,
    brier_score,
    calibrate,
    calibration_records,
    check_level,
    conformal_rank,
    conformal_threshold,
    expected_calibration_error,
    fit_temperature,
    guarantee_statement,
    known_p_values,
    minimum_calibration_size,
    negative_log_likelihood,
    redecide,
    uncalibrated_logits,
)
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.inference.prediction import decisions, predict_clips
from hesp_hf.modeling.configuration_hesp import HESPConfig

from .conftest import random_video


def config_with(scores=None, acceptance=None, threshold=None, temperature=1.0):
    return SimpleNamespace(
        calibration_scores=scores,
        known_acceptance=acceptance,
        unknown_threshold=threshold,
        probability_temperature=temperature,
        num_known_labels=2,
    )


def test_finite_sample_quantile_by_hand():
    scores = [0.7, 0.1, 0.5, 0.3, 0.9, 0.2, 0.8, 0.4, 0.6]  # n = 9, sorted 0.1 ... 0.9
    # alpha = 0.1: k = floor(0.1 * 10) = 1 (1 - 0.9 is 0.0999... in floating point: the rank must still be 1)
    assert conformal_rank(9, 0.9) == 1 and conformal_threshold(scores, 0.9) == 0.1
    # alpha = 0.2: k = 2; alpha = 0.5: k = floor(5) = 5; alpha = 0.35: k = floor(3.5) = 3
    assert conformal_threshold(scores, 0.8) == 0.2
    assert conformal_threshold(scores, 0.5) == 0.5
    assert conformal_threshold(scores, 0.65) == 0.3
    # alpha = 0.05 with n = 9: k = floor(0.5) = 0, out of reach; n >= 1/alpha - 1 = 19 is needed
    assert conformal_rank(9, 0.95) == 0 and minimum_calibration_size(0.95) == 19
    assert minimum_calibration_size(0.99) == 99 and conformal_rank(19, 0.95) == 1 and conformal_rank(18, 0.95) == 0
    with pytest.raises(ValueError, match=r"^known_acceptance 0\.95 cannot be reached with n=9 calibration scores"):
        conformal_threshold(scores, 0.95)
    assert conformal_threshold(scores, 0.95, strict=False) == 0.1  # training falls back to the lowest score


def test_p_value_by_hand_and_its_decision_is_the_threshold():
    calibration = [4.0, 1.0, 3.0, 2.0]  # n = 4
    # (1 + #{s_i <= s}) / 5: ties count as at or below
    assert known_p_values(calibration, [0.5, 2.0, 2.5, 4.0, 9.0]).tolist() == pytest.approx([0.2, 0.6, 0.6, 1.0, 1.0])
    rng = np.random.default_rng(0)
    calibration, new = rng.normal(size=60), np.r_[rng.normal(size=500), rng.choice(rng.normal(size=60), 20)]
    calibration = np.r_[calibration, new[-5:]]  # ties between new and calibration scores
    for acceptance in (0.8, 0.9, 0.95):
        threshold = conformal_threshold(calibration, acceptance)
        unknown_by_p = known_p_values(calibration, new) <= 1 - acceptance + 1e-9
        assert (unknown_by_p == (new < threshold)).all()
    # A whole-number alpha (n + 1) (n = 99 at 0.9, 19 at 0.95): the scores between the (k - 1)-th and the k-th
    # calibration score get p = k / (n + 1) = alpha exactly, above the float `1 - acceptance`: the documented
    # tolerance keeps them unknown, as the threshold decides.
    for n, acceptance in ((99, 0.9), (19, 0.95), (9, 0.8)):
        calibration = np.arange(1.0, n + 1)
        threshold = conformal_threshold(calibration, acceptance)
        new = np.arange(0.25, n + 1, 0.5)
        p_values = known_p_values(calibration, new)
        assert ((p_values <= 1 - acceptance + 1e-9) == (new < threshold)).all()
        band = (new < threshold) & (new > threshold - 1)
        assert band.any() and np.allclose(p_values[band], 1 - acceptance, rtol=0, atol=1e-12)


def test_nan_scores_are_refused_for_calibration_and_never_accepted_at_prediction():
    with pytest.raises(ValueError, match=r"^2 of the 5 known calibration scores are NaN: "):
        conformal_threshold([0.3, math.nan, 0.1, math.nan, 0.2], 0.5)
    config = config_with()
    with pytest.raises(ValueError, match=r"^1 of the 3 known calibration scores are NaN"):
        calibrate(config, np.array([0.2, np.nan, 0.4]), 0.5)
    assert config.unknown_threshold is None and config.calibration_scores is None  # nothing half-calibrated
    # A NaN score at prediction ranks below every calibration score: p = 1 / (n + 1), and it is not accepted.
    config = HESPConfig(id2label={0: "a", 1: "b", 2: "unknown"}, calibration_scores=[0.1, 0.2, 0.3, 0.4])
    config.known_acceptance, config.unknown_threshold = 0.6, 0.2
    assert known_p_values(config.calibration_scores, [math.nan, 0.25]).tolist() == pytest.approx([0.2, 0.6])
    outputs = SimpleNamespace(
        logits=torch.tensor([[1.0, 0.0, 0.0]] * 2), open_set_score=torch.tensor([math.nan, 0.25])
    )
    first, second = decisions(outputs, config)
    assert (first["label"], first["known"], first["known_p_value"]) == ("unknown", False, pytest.approx(0.2))
    assert (second["label"], second["known"], second["known_p_value"]) == ("a", True, pytest.approx(0.6))


def test_spread_is_the_beta_of_conformal_coverage():
    # n = 60, alpha = 0.05: k = 3, coverage ~ Beta(58, 3): mean 58 / 61; its 5 % quantile lies near 0.90
    spread = acceptance_spread(60, 0.95, test_size=100)
    assert spread["rate_mean"] == pytest.approx(58 / 61)
    assert 0.89 < spread["rate_low"] < 0.91 and spread["rate_high"] < 1
    assert spread["share_low"] < spread["rate_mean"] < spread["share_high"]  # the test set's binomial noise on top
    assert 0 < spread["chance_below_target"] < 1


def test_redeciding_at_a_new_level_equals_calibrating_at_it():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=120)
    trained = config_with()
    calibrate(trained, scores, 0.95)
    assert trained.calibration_scores == sorted(scores.tolist()) and trained.known_acceptance == 0.95
    for level in (0.8, 0.9, 0.99):
        fresh = config_with()
        calibrate(fresh, scores, level)
        redecide(trained, level)
        assert trained.unknown_threshold == fresh.unknown_threshold and trained.known_acceptance == level


def test_bad_levels_are_one_line_naming_the_level_and_n():
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=rf"^known_acceptance must lie strictly between 0 and 1.*got {bad}\.$"):
            check_level(bad)
    config = config_with(scores=[0.1 * i for i in range(10)], acceptance=0.9, threshold=0.0)
    with pytest.raises(ValueError) as caught:
        redecide(config, 0.99)
    message = str(caught.value)
    assert "\n" not in message and "0.99" in message and "n=10" in message and "n >= 99" in message
    with pytest.raises(Exception, match="HESPConfig.known_acceptance must lie in"):  # strict dataclass error
        HESPConfig(known_acceptance=1.2)
    with pytest.raises(Exception, match="HESPConfig.probability_temperature must be > 0"):
        HESPConfig(probability_temperature=0.0)


def test_temperature_scaling_lowers_nll_on_an_overconfident_case():
    # Two classes, logit margin 10 for the predicted class, right 75 % of the time: the NLL-optimal temperature
    # makes sigmoid(10 / T) = 0.75, T = 10 / ln 3.
    n = 400
    labels = np.zeros(n, dtype=int)
    labels[300:] = 1  # the last quarter is wrong: the logits always favour class 0
    logits = np.tile([10.0, 0.0], (n, 1))
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(10 / math.log(3), rel=1e-4)
    assert negative_log_likelihood(logits, labels, temperature) < negative_log_likelihood(logits, labels, 1.0)
    records = calibration_records(
        config_with(temperature=temperature), np.c_[logits, np.zeros(n)], logits[:, 0], labels
    )
    scaling = records["calibration"]
    assert scaling["ece_after"] == pytest.approx(0.0, abs=1e-4) and scaling["ece_before"] == pytest.approx(
        0.25, abs=1e-4
    )
    assert scaling["brier_after"] < scaling["brier_before"] and scaling["bins"] == 15
    assert records["conformal"]["guarantee"] is False  # no saved scores in this config


def test_no_temperature_is_fitted_when_every_calibration_clip_is_right(caplog):
    """Separable calibration clips: the NLL falls without end as T falls, so no temperature is fitted (1.0), with a
    warning; one wrong clip gives the likelihood an optimum again."""
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [4.0, 1.0]])
    labels = np.array([0, 1, 0])
    assert negative_log_likelihood(logits, labels, 0.1) < negative_log_likelihood(logits, labels, 1.0)
    with caplog.at_level("WARNING"):
        assert fit_temperature(logits, labels) == 1.0
    assert "classified correctly" in caplog.text
    wrong = np.array([0, 1, 1])
    fitted = fit_temperature(logits, wrong)
    assert fitted != 1.0 and negative_log_likelihood(logits, wrong, fitted) < negative_log_likelihood(
        logits, wrong, 1.0
    )


def test_ece_and_brier_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    labels = np.array([0, 1])
    # 0.9 falls in bin 14 of 15 (right, gap 0.1), 0.6 in bin 9 (wrong, gap 0.6): ECE = (0.1 + 0.6) / 2
    assert expected_calibration_error(probs, labels) == pytest.approx(0.35)
    assert brier_score(probs, labels) == pytest.approx(((0.01 + 0.01) + (0.36 + 0.36)) / 2)


def test_decisions_use_saved_scores_for_p_values_and_the_config_threshold():
    config = HESPConfig(id2label={0: "a", 1: "b", 2: "unknown"}, calibration_scores=[1.0, 2.0, 3.0, 4.0])
    config.known_acceptance, config.unknown_threshold = 0.8, 1.0
    outputs = SimpleNamespace(
        logits=torch.tensor([[3.0, 1.0, 9.0], [0.5, 0.2, -9.0]]), open_set_score=torch.tensor([2.5, 0.5])
    )  # "unknown" columns as an export baked them at another threshold: the config's threshold decides
    first, second = decisions(outputs, config)
    assert first["label"] == "a" and first["known"] and first["known_p_value"] == pytest.approx(3 / 5)
    assert second["label"] == "unknown" and not second["known"] and second["known_p_value"] == pytest.approx(1 / 5)
    assert first["probabilities"]["a"] == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-6)  # softmax of (3, 1)


@pytest.mark.parametrize("open_set_score", ["max_logit", "max_softmax"])
def test_the_temperature_reaches_the_pipeline_and_changes_no_decision(
    make_model, tiny_clip_dir, tmp_path, open_set_score
):
    from transformers import pipeline

    threshold = 0.0 if open_set_score == "max_logit" else 0.4
    model = make_model(unknown_threshold=threshold, open_set_score=open_set_score).eval()
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    clips = torch.stack(
        [
            processor(str(write_video(tmp_path / f"c{i}.mp4", random_video(6, 40, 48, seed=i))))[
                "pixel_values_videos"
            ][0]
            for i in range(6)
        ]
    )
    with torch.no_grad():
        raw = model(pixel_values_videos=clips)
        model.config.probability_temperature = 2.5
        scaled = model(pixel_values_videos=clips)
    # Every column divided by T: the decisions (arg-max over K + 1) and the known-ness score stay; the softmax over
    # the known columns is softmax(raw / T), and `uncalibrated_logits` gives the raw logits back.
    assert torch.equal(scaled.logits.argmax(-1), raw.logits.argmax(-1))
    torch.testing.assert_close(scaled.open_set_score, raw.open_set_score)
    torch.testing.assert_close(scaled.logits, raw.logits / 2.5)
    assert np.allclose(uncalibrated_logits(scaled.logits.numpy(), model.config), raw.logits.numpy(), atol=1e-5)
    rows = decisions(scaled, model.config)
    before = decisions(raw, model.config)
    expected = (raw.logits[:, :3] / 2.5).softmax(-1)
    for row, old, p in zip(rows, before, expected, strict=True):
        assert (row["label"], row["known"], row["score"]) == (old["label"], old["known"], old["score"])
        assert list(row["probabilities"].values()) == pytest.approx(p.tolist(), rel=1e-5)
    # The stock pipeline reads the same logits: its scores over the known classes are in the calibrated ratios.
    folder = tmp_path / "calibrated"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    clip = str(tmp_path / "c0.mp4")
    answer = {a["label"]: a["score"] for a in pipeline("video-classification", model=str(folder))(clip, top_k=4)}
    assert max(answer, key=answer.get) == rows[0]["label"]
    known = [answer[name] for name in ("happy", "sad", "neutral")]
    assert (np.array(known) / sum(known)).tolist() == pytest.approx(expected[0].tolist(), rel=1e-4)


@pytest.fixture
def old_checkpoint(make_model, tiny_clip_dir, tmp_path):
    """A checkpoint as saved before calibration scores existed: its config.json holds none of the new fields."""
    model = make_model(unknown_threshold=0.34, open_set_score="max_softmax")
    with torch.no_grad():
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(0))
    folder = tmp_path / "old"
    model.save_pretrained(folder)
    HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    for name in ("known_acceptance", "calibration_scores", "probability_temperature"):
        config.pop(name, None)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_old_checkpoint_loads_predicts_as_before_and_says_it_has_no_guarantee(old_checkpoint, tmp_path):
    from hesp_hf.pairing import load_pair

    model, processor = load_pair(str(old_checkpoint))
    config = model.config
    assert config.calibration_scores is None and config.known_acceptance is None
    assert config.probability_temperature == 1.0 and config.unknown_threshold == pytest.approx(0.34)
    clips = [str(write_video(tmp_path / f"c{i}.mp4", random_video(6, 40, 48, seed=i))) for i in range(4)]
    rows, _ = predict_clips(model, processor, clips, None, batch_size=4, num_workers=0, progress=False)
    for row in rows:
        with torch.no_grad():
            output = model(**processor(row["file"], return_tensors="pt"))
        assert row["label"] == config.id2label[int(output.logits.argmax())]  # the old reading of the output
        assert row["probabilities"]["happy"] == pytest.approx(float(output.logits[0, :3].softmax(-1)[0]), rel=1e-5)
        assert row["known_p_value"] is None
    assert "no saved calibration scores" in guarantee_statement(config)
    with pytest.raises(ValueError, match=r"^known_acceptance 0\.9: the checkpoint carries no saved calibration"):
        redecide(config, 0.9)

    # Calibrated on these clips' scores at 0.95 (out of reach with n = 4: the lowest score), then re-decided at 0.6:
    # k = floor(0.4 * 5) = 2, and exactly the clips with p <= 0.4 are unknown: the lowest score alone.
    calibrate(config, np.array([row["score"] for row in rows]), 0.95)
    redecide(config, 0.6)
    rows, _ = predict_clips(model, processor, clips, None, batch_size=4, num_workers=0, progress=False)
    assert [row["known_p_value"] for row in rows] == pytest.approx(
        known_p_values(config.calibration_scores, [row["score"] for row in rows]).tolist()
    )
    assert [row["known"] for row in rows] == [row["known_p_value"] > 0.4 for row in rows]
    assert sum(not row["known"] for row in rows) == 1

    config.save_pretrained(old_checkpoint)  # the fields round-trip through config.json
    saved = HESPConfig.from_pretrained(old_checkpoint)
    assert saved.calibration_scores == config.calibration_scores and saved.known_acceptance == 0.6


def test_predict_command_refuses_bad_levels_in_one_line(old_checkpoint, tmp_path, monkeypatch, capsys):
    from hesp_hf.commands.predict import cli

    clip = str(write_video(tmp_path / "c.mp4", random_video(6, 40, 48)))
    base = ["hesp-predict", "--checkpoint", str(old_checkpoint), "--output", str(tmp_path / "o.jsonl"), clip]
    for level, expected in (
        ("1.5", "--known_acceptance must lie strictly between 0 and 1"),
        ("0.9", "carries no saved calibration scores"),
    ):
        monkeypatch.setattr(sys, "argv", [*base, "--known_acceptance", level, "--num_workers", "0", "--no_progress"])
        with pytest.raises(SystemExit) as exited:
            cli()
        error = capsys.readouterr().err
        assert exited.value.code == 2 and expected in error and level in error
        # One line (the library's weight-loading progress bar may stand before it on stderr).
        lines = [line for line in error.splitlines() if line.startswith("hesp-predict: error:")]
        assert len(lines) == 1 and lines[0].startswith("hesp-predict: error: --known_acceptance")
        assert "Traceback" not in error
    assert not (tmp_path / "o.jsonl").exists()  # refused before any row was written


def test_split_check_script_matches_the_beta_binomial_on_exchangeable_scores():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from conformal_check import split_check

    pool = np.random.default_rng(5).normal(size=240)
    results = split_check(pool, [0.9, 0.95, 0.99], splits=300, calibration_size=120, seed=0)
    assert [r["k"] for r in results] == [12, 6, 1]  # floor(alpha * 121)
    for r in results:
        assert r["within"], r
        assert r["mean_acceptance"] == pytest.approx(1 - r["k"] / 121, abs=0.01)
    assert split_check(pool, [0.99], splits=10, calibration_size=50, seed=0)[0]["reachable"] is False


def test_the_app_states_the_p_value_and_the_guarantee():
    pytest.importorskip("gradio")
    from hesp_hf.app.analysis import Analysis
    from hesp_hf.app.page import decision_text
    from hesp_hf.inference.timeline import TimelineWindow

    window = TimelineWindow(0.0, 2.0, label="unknown", known=False, score=0.3, threshold=0.5, known_p_value=0.04)
    result = Analysis(name="c.mp4", duration=2.0, decision=window, crops=[])
    assert "p-value 0.040" in decision_text(result) and result.to_json()["known_p_value"] == 0.04
    scored = config_with(scores=[1.0, 2.0, 3.0], acceptance=0.5, threshold=2.0)
    assert "probability >= 0.5000" in guarantee_statement(scored)  # k = floor(0.5 * 4) = 2: 1 - 2 / 4
    assert "Nothing bounds how many unknown expressions are caught" in guarantee_statement(scored)
