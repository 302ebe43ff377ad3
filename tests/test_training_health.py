"""Training that does not derail: the bounded visual prompt, its own learning rate, and the run's health report."""

import json
import math

import pytest
import torch

from hesp_hf import HESPConfig
from hesp_hf.training import TrainingTrajectory, milestone_schedule, prompt_sgd
from hesp_hf.training.health import ACCURACY_DROP, EpochRecord


def test_bounded_visual_prompt_is_tanh_of_the_parameter(make_model):
    model = make_model(visual_prompt_bound=0.1)
    prompt = model.visual_prompt
    with torch.no_grad():
        prompt.delta.zero_()
        prompt.delta[0, 0, :4] = torch.tensor([0.001, -0.05, 0.3, -5.0])
    change = prompt.pixel_delta()[0, 0, :4]
    # bound * tanh(delta / bound), by hand: about delta while small, never past the bound.
    expected = torch.tensor([0.1 * math.tanh(0.01), 0.1 * math.tanh(-0.5), 0.1 * math.tanh(3.0), -0.1 * math.tanh(50)])
    torch.testing.assert_close(change, expected)
    assert abs(change[0] - 0.001) < 1e-6 and change.abs().max() <= 0.1
    unbounded = make_model(visual_prompt_bound=None).visual_prompt
    with torch.no_grad():
        unbounded.delta.fill_(3.0)
    assert torch.equal(unbounded.pixel_delta(), unbounded.delta)


def test_the_bound_is_saved_and_checked(make_model, tmp_path):
    model = make_model()
    assert model.config.visual_prompt_bound is None  # the paper's unbounded prompt unless asked
    make_model(visual_prompt_bound=0.05).config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["visual_prompt_bound"] == 0.05
    assert HESPConfig.from_pretrained(tmp_path).visual_prompt_bound == 0.05
    with pytest.raises(Exception, match=r"visual_prompt_bound must be > 0 .* got -0.5"):
        make_model(visual_prompt_bound=-0.5)


def test_visual_prompt_learning_rate_scale_follows_the_schedule(make_model):
    model = make_model()
    optimizer = prompt_sgd(model, learning_rate=0.05, momentum=0.9, weight_decay=1e-4, visual_prompt_lr_scale=0.1)
    groups = [
        group for group in optimizer.param_groups if any(p is model.visual_prompt.delta for p in group["params"])
    ]
    assert len(groups) == 1 and groups[0]["params"] == [model.visual_prompt.delta]
    assert groups[0]["lr"] == pytest.approx(0.005)
    others = [group for group in optimizer.param_groups if group is not groups[0]]
    assert all(group["lr"] == pytest.approx(0.05) for group in others)
    schedule = milestone_schedule(optimizer, steps_per_epoch=2, milestones=[1], gamma=0.1)
    for _ in range(2):
        optimizer.step()
        schedule.step()  # past the milestone at epoch 1: every group x 0.1
    assert groups[0]["lr"] == pytest.approx(0.0005) and others[0]["lr"] == pytest.approx(0.005)
    with pytest.raises(ValueError, match="visual_prompt_lr_scale must be > 0, got 0"):
        prompt_sgd(model, 0.05, 0.9, 1e-4, visual_prompt_lr_scale=0)


def trajectory_of(accuracies, losses=None) -> TrainingTrajectory:
    trajectory = TrainingTrajectory()
    for epoch, accuracy in enumerate(accuracies, start=1):
        loss = 1.0 if losses is None else losses[epoch - 1]
        trajectory.epochs.append(EpochRecord(epoch, loss, accuracy, 0.05))
    return trajectory


def test_health_verdicts():
    healthy = trajectory_of([0.4, 0.7, 0.9, 0.88]).assess({"trained": 0.95, "frozen": 0.93})
    assert not healthy.derailed and healthy.reason is None and healthy.advice is None
    assert healthy.training_accuracy == 0.88 and len(healthy.epochs) == 4
    # Lost what it learned: 0.9 at epoch 3, more than ACCURACY_DROP lower at the end.
    fell = trajectory_of([0.5, 0.9, 0.9 - ACCURACY_DROP - 0.05]).assess()
    assert fell.derailed and "fell from 0.900 (epoch 2) to 0.700" in fell.reason and fell.advice
    # Within the drop allowed: healthy.
    assert not trajectory_of([0.5, 0.9, 0.9 - ACCURACY_DROP + 0.05]).assess().derailed
    # The prototype head's check: the trained embedding worse than the frozen CLIP by more than the margin.
    worse = trajectory_of([0.5, 0.7, 0.74]).assess({"trained": 0.65, "frozen": 0.91}, margin=0.05)
    assert worse.derailed and "leave-one-out accuracy 0.650 against 0.910" in worse.reason
    assert not trajectory_of([0.5, 0.7]).assess({"trained": 0.88, "frozen": 0.91}, margin=0.05).derailed
    # Near chance at the end (1.5 x 1/3 = 0.5 with three classes), although nothing fell.
    stuck = trajectory_of([0.3, 0.34])
    stuck.num_classes = 3
    verdict = stuck.assess()
    assert verdict.derailed and "stayed near chance (0.340 in the last epoch, chance 0.333 with 3 classes)" in (
        verdict.reason
    )
    learned = trajectory_of([0.3, 0.55])
    learned.num_classes = 3
    assert not learned.assess().derailed
    # A non-finite loss, seen as the batches pass.
    broken = TrainingTrajectory()
    broken.observe(torch.tensor(float("nan")), torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]))
    verdict = broken.assess()
    assert verdict.derailed and "non-finite in epoch 1" in verdict.reason
    json.dumps(verdict.to_dict())  # metrics.json takes it as it is


def test_observe_counts_clips_and_correct_predictions():
    trajectory = TrainingTrajectory()
    # Two known classes and the "unknown" column, which the arg-max over the known classes never reads.
    logits = torch.tensor([[2.0, 0.0, 9.0], [0.0, 1.0, 9.0], [3.0, 1.0, 9.0]])
    trajectory.observe(torch.tensor(2.0), logits, torch.tensor([0, 0, 0]))  # 2 of 3 right
    trajectory.observe(torch.tensor(4.0), logits[:1], torch.tensor([1]))  # 0 of 1 right
    assert trajectory.num_classes == 2
    trajectory.on_epoch_end(None, None, None, model=None)
    (record,) = trajectory.epochs
    assert record.training_accuracy == pytest.approx(2 / 4)
    assert record.loss == pytest.approx((2.0 * 3 + 4.0 * 1) / 4)  # clips weighted alike
    assert record.visual_prompt_max_change is None


def test_recipes_choose_the_visual_prompt_and_flags_override(tmp_path):
    from hesp_hf.run.arguments import ModelArguments

    hesp_hf_recipe = ModelArguments(clip_model="x")
    assert hesp_hf_recipe.use_visual_prompt is False and hesp_hf_recipe.config_fields()["visual_prompt_bound"] is None
    assert ModelArguments(clip_model="x", recipe="paper").use_visual_prompt is True
    given = ModelArguments(clip_model="x", use_visual_prompt=True, visual_prompt_bound=0.1)
    assert given.config_fields()["use_visual_prompt"] is True and given.config_fields()["visual_prompt_bound"] == 0.1
    assert given.recipe_overrides() == {"use_visual_prompt": True}  # named on the model card
    with pytest.raises(ValueError, match=r"--visual_prompt_bound must be >= 0 .* got -1"):
        ModelArguments(clip_model="x", visual_prompt_bound=-1)
    with pytest.raises(ValueError, match="--visual_prompt_lr_scale must be > 0, got 0"):
        ModelArguments(clip_model="x", visual_prompt_lr_scale=0)
