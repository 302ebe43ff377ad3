"""HESPTrainer against a plain reference loop, the class-stratified sampler, and the recipe arguments."""

import copy
import re
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
from transformers import HfArgumentParser, TrainerCallback, TrainingArguments

from hesp_hf.data import collate_clips
from hesp_hf.run.arguments import RECIPES, HESPTrainingArguments, ModelArguments
from hesp_hf.training import ClassStratifiedSampler, HESPTrainer


def test_stratified_sampler_spreads_every_class_over_the_epoch():
    labels = [0] * 30 + [1] * 12 + [2] * 6 + [3] * 2  # imbalanced, as real data is
    sampler = ClassStratifiedSampler(labels, seed=7)
    counts = Counter(labels)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(labels)))  # a permutation: each clip once, nothing oversampled
        orders.append(order)
        # Every prefix holds each class in its training-set proportion, up to the rounding of one key per class
        # (bound: 1 + K * n_k / N, K classes), so no early batch can be dominated by one class.
        for length in range(1, len(labels) + 1):
            seen = Counter(labels[i] for i in order[:length])
            for label, total in counts.items():
                expected = total * length / len(labels)
                assert abs(seen[label] - expected) <= 1 + len(counts) * total / len(labels), (epoch, length, label)
    assert len({tuple(order) for order in orders}) == 3  # a new order each epoch
    again = ClassStratifiedSampler(labels, seed=7)
    again.set_epoch(1)
    assert list(again) == orders[1]  # a function of (seed, epoch) only: every process draws the same order
    other_seed = ClassStratifiedSampler(labels, seed=8)
    other_seed.set_epoch(1)
    assert list(other_seed) != orders[1]


def test_stratified_first_batch_cannot_be_one_class():
    """The failure it exists for: a 32-clip first batch from 6 classes of 27 clips holds every class 4-7 times
    (32/6 = 5.3 each, within the bound above); a plain shuffle of the same clips does not (10 of one class seen)."""
    labels = [label for label in range(6) for _ in range(27)]
    for seed in range(20):
        sampler = ClassStratifiedSampler(labels, seed=seed)
        first = Counter(labels[i] for i in list(sampler)[:32])
        assert len(first) == 6 and set(first.values()) <= {4, 5, 6, 7}, first
    shuffled = [Counter(labels[i] for i in torch.randperm(162, generator=torch.Generator().manual_seed(s))[:32].tolist())
                for s in range(20)]  # fmt: skip
    assert any(len(c) < 6 or max(c.values()) > 7 for c in shuffled)


def test_recipes_fill_only_the_fields_left_unset():
    recommended = ModelArguments(clip_model="x")
    assert (recommended.n_ctx, recommended.reciprocal_distance, recommended.train_sampling) == (
        4,
        "l2",
        "class_stratified",
    )
    paper = ModelArguments(clip_model="x", recipe="paper")
    assert (paper.n_ctx, paper.reciprocal_distance, paper.train_sampling) == (16, "arpl", "random")
    mixed = ModelArguments(clip_model="x", recipe="paper", reciprocal_distance="l2")
    assert (mixed.reciprocal_distance, mixed.train_sampling) == ("l2", "random")
    assert set(RECIPES) == {"hesp-hf", "paper"}
    with pytest.raises(ValueError, match="--recipe must be one of"):
        ModelArguments(clip_model="x", recipe="best")
    with pytest.raises(ValueError, match="--reciprocal_distance must be one of"):
        ModelArguments(clip_model="x", reciprocal_distance="cosine")
    # Through the command-line parser train.py uses: explicit flags win, the rest comes from the recipe.
    parser = HfArgumentParser(ModelArguments)
    (parsed,) = parser.parse_args_into_dataclasses(
        ["--clip_model", "x", "--recipe", "paper", "--reciprocal_distance", "l2", "--n_ctx", "0"]
    )
    assert (parsed.n_ctx, parsed.reciprocal_distance, parsed.train_sampling) == (0, "l2", "random")
    assert parsed.recipe_overrides() == {"n_ctx": 0, "reciprocal_distance": "l2"}


def test_python_callers_get_the_command_lines_choice_checks():
    from hesp_hf.run.arguments import DataArguments

    with pytest.raises(ValueError, match=r"--temporal_pooling must be one of mean, attention, got 'max'"):
        ModelArguments(clip_model="x", temporal_pooling="max")
    with pytest.raises(ValueError, match=r"--train_sampling must be one of random, class_stratified, got 'balanced'"):
        ModelArguments(clip_model="x", train_sampling="balanced")
    with pytest.raises(ValueError, match=r"--dataset must be one of dfew, mafw, afew, ferv39k, custom, got 'dfw'"):
        DataArguments(dataset="dfw")
    with pytest.raises(ValueError, match=r"--on_bad_clip must be one of"):
        DataArguments(dataset="dfew", on_bad_clip="ignore")
    assert DataArguments(dataset="mafw").dataset == "mafw"


def test_known_acceptance_is_checked_before_training():
    from hesp_hf.run.arguments import ModelArguments

    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"--known_acceptance must lie strictly between 0 and 1"):
            ModelArguments(clip_model="x", known_acceptance=bad)
    assert ModelArguments(clip_model="x").known_acceptance == 0.95
    with pytest.warns(FutureWarning, match="--keep_share is deprecated"):  # the older name still sets the level
        assert ModelArguments(clip_model="x", keep_share=0.9).known_acceptance == 0.9


def test_loss_weights_are_parsed_once_per_set_of_options(monkeypatch):
    import hesp_hf.run.arguments as arguments

    calls = []
    real = arguments.loss_settings
    monkeypatch.setattr(arguments, "loss_settings", lambda value: calls.append(value) or real(value))
    options = ModelArguments(clip_model="x", loss_weights=["negative_clip_weight=0.5"])
    assert options.loss_overrides() == {"known_contrastive_weight": 3.0, "negative_clip_weight": 0.5}  # recipe's too
    assert options.config_fields()["negative_clip_weight"] == 0.5
    assert len(calls) == 1  # the options, the overrides and the config fields read one parse


def test_each_recipe_sets_its_loss_weights_and_a_given_weight_wins():
    """hesp-hf weights the supervised contrastive term 3x, the paper's recipe keeps HESPConfig's equal weights; a
    `--loss_weights` item overrides the recipe's and counts as a departure from it (the model card says so)."""
    from hesp_hf import HESPConfig
    from hesp_hf.run.outputs import recipe_summary

    assert HESPConfig().known_contrastive_weight == 1.0
    ours = ModelArguments(clip_model="x")
    assert ours.config_fields()["known_contrastive_weight"] == 3.0 and ours.recipe_overrides() == {}
    assert "`known_contrastive_weight=3`" in recipe_summary(ours)
    paper = ModelArguments(clip_model="x", recipe="paper")
    assert "known_contrastive_weight" not in paper.config_fields() and paper.loss_overrides() == {}
    given = ModelArguments(clip_model="x", loss_weights=["known_contrastive_weight=1"])
    assert given.config_fields()["known_contrastive_weight"] == 1.0
    assert given.recipe_overrides() == {"known_contrastive_weight": 1.0}
    same = ModelArguments(clip_model="x", recipe="paper", loss_weights=["known_ce_weight=1", "hybrid_ce_weight=2"])
    assert same.recipe_overrides() == {"hybrid_ce_weight": 2.0}  # the weight the paper's recipe has is no departure


def test_milestones_and_loss_weights_are_typed_lists_from_every_source():
    parser = HfArgumentParser(ModelArguments)
    (parsed,) = parser.parse_args_into_dataclasses(
        [
            "--clip_model",
            "x",
            "--milestones",
            "8",
            "10",
            "--loss_weights",
            "negative_clip_weight=0.5",
            "known_ce_weight=2",
        ]
    )
    assert parsed.milestones == [8, 10]
    recipe = {"known_contrastive_weight": 3.0}  # the hesp-hf recipe's, under the given ones
    assert parsed.loss_overrides() == recipe | {"negative_clip_weight": 0.5, "known_ce_weight": 2.0}
    assert (
        ModelArguments(clip_model="x").milestones == [30, 60, 90]
        and ModelArguments(clip_model="x").loss_overrides() == recipe
    )
    # Python callers and the comma strings of earlier run_arguments.json files give the same lists.
    old = ModelArguments(clip_model="x", milestones="8,10", loss_weights="negative_clip_weight=0.5,known_ce_weight=2")
    mapping = ModelArguments(
        clip_model="x", milestones=(8, 10), loss_weights={"negative_clip_weight": 0.5, "known_ce_weight": 2}
    )
    for other in (old, mapping):
        assert (other.milestones, other.loss_overrides()) == (parsed.milestones, parsed.loss_overrides())
    assert old.loss_weights == ["negative_clip_weight=0.5", "known_ce_weight=2.0"]
    with pytest.raises(ValueError, match=r"--milestones takes int values .*'8,ten'"):
        ModelArguments(clip_model="x", milestones="8,ten")
    with pytest.raises(ValueError, match=r"'negative_weight=1' does not name a loss setting; .*negative_clip_weight"):
        ModelArguments(clip_model="x", loss_weights=["negative_weight=1"])
    with pytest.raises(ValueError, match=r"'known_ce_weight=high' needs a number"):
        ModelArguments(clip_model="x", loss_weights=["known_ce_weight=high"])


class _Recorder(TrainerCallback):
    """The learning rate of every group when each step starts (the one the step uses) and the parameters after it."""

    def __init__(self):
        self.lrs, self.params = [], []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append([group["lr"] for group in optimizer.param_groups])

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.params.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})


class _TermTrainer(HESPTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.terms = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        self.terms.append({k: float(v.detach()) for k, v in outputs.loss_terms.items()})
        return (loss, outputs) if return_outputs else loss


def test_trainer_equals_a_plain_reference_loop(make_model, tmp_path):
    """6 steps (2 epochs of 3 batches of 4 clips) with warm-up and a milestone: the `Trainer` path computes what a
    hand-written SGD loop computes: the lr of every group at every step, every loss term, every parameter, and
    weight decay exactly on the >= 2-D tensors."""
    model = make_model(temporal_pooling="attention", reciprocal_distance="l2")
    reference = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    videos = torch.randn(12, 4, 3, 32, 32, generator=generator)
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    dataset = datasets.Dataset.from_dict({"index": list(range(12)), "label": labels}).with_transform(
        lambda batch: {"pixel_values_videos": [videos[i] for i in batch["index"]], "labels": batch["label"]}
    )
    args = HESPTrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        learning_rate=0.05,
        weight_decay=1e-4,
        warmup_steps=2,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        logging_steps=1,
        seed=5,
        dataloader_num_workers=0,
        use_cpu=True,
    )
    recorder = _Recorder()
    trainer = _TermTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collate_clips,
        milestones=[1],
        gamma=0.1,
        train_sampling="class_stratified",
        callbacks=[recorder],
    )
    trainer.train()

    named = dict(model.named_parameters())
    group_names = [sorted(n for n, p in named.items() if any(p is q for q in g["params"])) for g in
                   trainer.optimizer.param_groups]  # fmt: skip
    assert group_names == [
        ["prompt_learner.ctx", "reciprocal_points.images", "visual_prompt.delta"],
        ["reciprocal_points.radius", "temporal_pooling.query", "temporal_pooling.text_guidance"],
    ]
    assert [group["weight_decay"] for group in trainer.optimizer.param_groups] == [1e-4, 0.0]

    # The reference: torch's SGD on the same two groups, the schedule written out, the batches in the sampler's
    # order (its properties are tested above).
    expected_lrs = [0.05 * min(1.0, (step + 1) / 2) * (0.1 if step >= 3 else 1.0) for step in range(6)]
    assert [lrs for lrs in recorder.lrs] == [pytest.approx([lr, lr]) for lr in expected_lrs]
    reference_named = dict(reference.named_parameters())
    optimizer = torch.optim.SGD(
        [
            {"params": [reference_named[n] for n in group_names[0]], "weight_decay": 1e-4},
            {"params": [reference_named[n] for n in group_names[1]], "weight_decay": 0.0},
        ],
        lr=0.05,
        momentum=0.9,
    )
    reference.train()
    sampler = ClassStratifiedSampler(labels, seed=5)
    batches = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches += [order[i : i + 4] for i in range(0, 12, 4)]
    for step in range(6):
        for group in optimizer.param_groups:
            group["lr"] = expected_lrs[step]
        ids = batches[step]
        output = reference(pixel_values_videos=videos[ids], labels=torch.tensor([labels[i] for i in ids]))
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        terms = {k: float(v.detach()) for k, v in output.loss_terms.items()}
        assert terms == pytest.approx(trainer.terms[step], rel=1e-5, abs=1e-6), step
        for name, value in recorder.params[step].items():
            torch.testing.assert_close(reference_named[name].detach(), value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("optim", "adamw_torch"),
        ("lr_scheduler_type", "cosine"),
        ("adam_beta1", 0.8),
        ("adam_epsilon", 1e-6),
        ("label_smoothing_factor", 0.2),
        ("lr_scheduler_kwargs", {"a": 1}),
    ],
)
def test_trainer_flags_hesp_would_ignore_are_refused(tmp_path, flag, value):
    with pytest.raises(ValueError, match=f"--{flag} {re.escape(str(value))}.*SGD with momentum"):
        HESPTrainingArguments(output_dir=str(tmp_path), **{flag: value})
    HESPTrainingArguments(output_dir=str(tmp_path))  # the defaults pass


def test_label_names_is_not_the_class_list(tmp_path):
    with pytest.raises(ValueError, match="--class_names"):
        HESPTrainingArguments(output_dir=str(tmp_path), label_names=["calm,smile"])
    assert HESPTrainingArguments(output_dir=str(tmp_path)).label_names == ["labels"]


def test_selection_metric_given_is_kept(tmp_path):
    from hesp_hf.run.setup import choose_selection_metric

    default = HESPTrainingArguments(output_dir=str(tmp_path))
    choose_selection_metric(default, has_unknown_validation=True)
    assert (default.metric_for_best_model, default.greater_is_better) == ("oscr_plus_auroc", True)
    choose_selection_metric(default := HESPTrainingArguments(output_dir=str(tmp_path)), has_unknown_validation=False)
    assert default.metric_for_best_model == "accuracy"
    given = HESPTrainingArguments(output_dir=str(tmp_path), metric_for_best_model="auroc")
    choose_selection_metric(given, has_unknown_validation=True)
    assert (given.metric_for_best_model, given.greater_is_better) == ("auroc", True)
    loss = HESPTrainingArguments(output_dir=str(tmp_path), metric_for_best_model="eval_loss")
    choose_selection_metric(loss, has_unknown_validation=True)
    assert (loss.metric_for_best_model, loss.greater_is_better) == ("eval_loss", False)


def test_hub_push_is_checked_before_training(tmp_path, monkeypatch):
    from huggingface_hub import constants

    import hesp_hf.hub.upload as hub

    with pytest.raises(ValueError, match="needs --hub_model_id"):
        hub.check_hub_access(HESPTrainingArguments(output_dir=str(tmp_path), push_to_hub=True))
    args = HESPTrainingArguments(output_dir=str(tmp_path), push_to_hub=True, hub_model_id="org/hesp-x")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        hub.check_hub_access(args)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(ValueError, match="needs a Hub token"):
        hub.check_hub_access(args)
    hub.check_hub_access(HESPTrainingArguments(output_dir=str(tmp_path)))  # no push: nothing to check
    with pytest.raises(ValueError, match="holds no trained model"):
        hub.push_folder(tmp_path, "org/hesp-x")
    checkpoint = tmp_path / "checkpoint-63"
    checkpoint.mkdir()
    for name in ("config.json", "model.safetensors", "trainer_state.json", "optimizer.pt"):
        (checkpoint / name).write_text("x")
    with pytest.raises(ValueError, match="is a Trainer checkpoint.*push the finished run folder"):
        hub.push_folder(checkpoint, "org/hesp-x")


def test_push_folder_uploads_the_model_and_card_but_not_local_state(tmp_path, monkeypatch):
    import fnmatch

    import huggingface_hub

    from hesp_hf.hub.upload import push_folder

    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "training_args.bin",
                 "run_arguments.json", "clip_report.tsv", "checkpoint-3/model.safetensors", "runs/events.out"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, ignore_patterns, commit_message):
            files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
            sent = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in ignore_patterns)]
            calls.append(("upload", repo_id, sorted(sent)))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    push_folder(tmp_path, "org/hesp-x", token="t", private=True)
    assert calls == [
        ("token", "t"),
        ("repo", "org/hesp-x", True, True),
        ("upload", "org/hesp-x", ["README.md", "config.json", "metrics.json", "model.safetensors"]),
    ]


def test_no_pinned_memory_without_an_accelerator(tmp_path):
    args = HESPTrainingArguments(output_dir=str(tmp_path))
    assert args.dataloader_pin_memory == torch.cuda.is_available()


@pytest.mark.parametrize("reciprocal", [True, False])
def test_predictions_are_mapped_by_name_not_position(make_model, tmp_path, reciprocal):
    """`predict_open_set` takes each branch by its output name: with reciprocal points off (one output fewer) the
    CLIP branch is still the CLIP branch, and every array equals the model's own output."""
    import datasets

    from hesp_hf.data import collate_clips
    from hesp_hf.evaluation.report import predict_open_set
    from hesp_hf.training import HESPTrainer

    model = make_model(use_reciprocal_points=reciprocal).eval()
    pixels = torch.randn(5, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    table = {"pixel_values_videos": pixels.numpy(), "labels": [0, 1, -1, 2, 0]}
    dataset = datasets.Dataset.from_dict(table).with_format("torch")
    args = TrainingArguments(
        str(tmp_path), report_to="none", use_cpu=True, remove_unused_columns=False, per_device_eval_batch_size=2
    )
    trainer = HESPTrainer(model=model, args=args, data_collator=collate_clips)
    predictions = predict_open_set(trainer, dataset)
    with torch.no_grad():
        expected = model(pixel_values_videos=pixels)
    torch.testing.assert_close(torch.as_tensor(predictions.logits), expected.logits)
    torch.testing.assert_close(torch.as_tensor(predictions.scores), expected.open_set_score)
    torch.testing.assert_close(torch.as_tensor(predictions.branch_logits["clip"]), expected.clip_logits)
    assert ("reciprocal" in predictions.branch_logits) == reciprocal
    if reciprocal:
        torch.testing.assert_close(
            torch.as_tensor(predictions.branch_logits["reciprocal"]), expected.reciprocal_logits
        )
    assert predictions.labels.tolist() == [0, 1, -1, 2, 0]
    # One list: what evaluation gathers and what the config leaves out during training cover every output field.
    from hesp_hf.evaluation.report import GATHERED_OUTPUTS
    from hesp_hf.modeling.modeling_hesp import HESPVideoClassifierOutput

    fields = set(HESPVideoClassifierOutput.__dataclass_fields__) - {"loss"}
    assert set(model.config.keys_to_ignore_at_inference) == fields - set(GATHERED_OUTPUTS)


def test_bf16_training_runs_frozen_towers_in_bf16_and_saves_them_in_float32(make_model, tmp_path):
    """`--bf16`: the frozen towers run in bfloat16 during the steps (checked inside a step), with eager attention on
    the CPU; every checkpoint holds their exact float32 weights, and after training the model is float32 again with
    the towers untouched and its own attention back; the prompts train (they move) and stay float32."""
    from safetensors.torch import load_file

    model = make_model()
    towers_before = {
        k: v.clone() for k, v in model.state_dict().items() if k.startswith(("vision_model", "text_model"))
    }
    ctx_before = model.prompt_learner.ctx.detach().clone()
    videos = torch.randn(8, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    dataset = datasets.Dataset.from_dict({"index": list(range(8)), "label": [0, 1, 2, 0, 1, 2, 0, 1]}).with_transform(
        lambda batch: {"pixel_values_videos": [videos[i] for i in batch["index"]], "labels": batch["label"]}
    )
    dtypes_seen = []

    class Spy(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            dtypes_seen.append(
                (
                    model.vision_model.embeddings.patch_embedding.weight.dtype,
                    model.prompt_learner.ctx.dtype,
                    model.vision_model.config._attn_implementation,
                )
            )

    args = HESPTrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=4, learning_rate=0.5, bf16=True,
        eval_strategy="no", save_strategy="steps", save_steps=1, load_best_model_at_end=False, use_cpu=True,
        dataloader_num_workers=0, report_to="none",
    )  # fmt: skip
    trainer = HESPTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collate_clips, callbacks=[Spy()]
    )
    attention = model.config._attn_implementation
    assert attention == "sdpa"
    trainer.train()
    assert dtypes_seen == [(torch.bfloat16, torch.float32, "eager")] * 2
    assert model.config._attn_implementation == model.vision_model.config._attn_implementation == attention
    saved = load_file(str(tmp_path / "checkpoint-2" / "model.safetensors"))
    after = model.state_dict()
    for name, value in towers_before.items():
        assert after[name].dtype == torch.float32 and torch.equal(after[name], value), name
        if name in saved:
            assert saved[name].dtype == torch.float32 and torch.equal(saved[name], value), name
    assert not torch.equal(model.prompt_learner.ctx, ctx_before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's default")
def test_bf16_without_a_gpu_trains_on_the_cpu(tmp_path):
    """The stock arguments refuse `--bf16` without a GPU unless `--use_cpu` is given; on a CPU-only machine the CPU
    is the only device, so HESP's arguments choose it."""
    args = HESPTrainingArguments(output_dir=str(tmp_path), bf16=True)
    assert args.use_cpu and args.bf16


def test_options_argv_parses_back_to_the_same_arguments(tmp_path):
    from dataclasses import asdict

    from hesp_hf.commands.cli import DataclassArgumentParser
    from hesp_hf.commands.train import options_argv
    from hesp_hf.embedded.defaults import synthetic_training_options
    from hesp_hf.run.arguments import DataArguments, training_arguments

    options = synthetic_training_options(tmp_path / "data", tmp_path / "run", epochs=12, seed=3) | {
        "loss_weights": ["negative_clip_weight=0.5"],
        "use_visual_prompt": False,
        "fold": None,
    }
    argv = options_argv(options)
    assert argv[argv.index("--milestones") : argv.index("--milestones") + 3] == ["--milestones", "8", "10"]
    assert "--fold" not in argv and argv[argv.index("--use_visual_prompt") + 1] == "false"
    parser = DataclassArgumentParser((ModelArguments, DataArguments, HESPTrainingArguments))
    from_argv = parser.parse_args_into_dataclasses(args=argv)
    from_options = training_arguments(**options)
    for parsed, given in zip(from_argv[:2], from_options[:2], strict=True):
        assert asdict(parsed) == asdict(given)
    assert from_argv[2].to_dict() == from_options[2].to_dict()


def test_evaluation_never_writes_into_a_trained_folder(tmp_path):
    from dataclasses import replace

    from hesp_hf.commands.evaluate import EvaluationArguments, evaluate_checkpoint
    from hesp_hf.run.arguments import DataArguments

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    data = DataArguments(dataset="custom", class_names=["a", "b"], test_annotation=str(tmp_path / "test.csv"))
    with pytest.raises(ValueError, match=r"holds a trained model \(config.json\)"):
        evaluate_checkpoint(
            EvaluationArguments(checkpoint=str(tmp_path / "other"), output_dir=str(tmp_path / "run")), data
        )
    with pytest.raises(ValueError, match=r"holds a trained model \(the checkpoint\)"):
        evaluate_checkpoint(EvaluationArguments(checkpoint=str(tmp_path / "x"), output_dir=str(tmp_path / "x")), data)
    # An earlier evaluation is kept unless its replacement is asked for (then the missing checkpoint is reported).
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text('{"auroc": 0.9}')
    earlier = EvaluationArguments(checkpoint=str(tmp_path / "other"), output_dir=str(tmp_path / "eval"))
    with pytest.raises(ValueError, match=r"already holds an evaluation \(metrics.json\).*--overwrite_output_dir"):
        evaluate_checkpoint(earlier, data)
    assert (tmp_path / "eval" / "metrics.json").read_text() == '{"auroc": 0.9}'
    with pytest.raises(OSError, match="other"):
        evaluate_checkpoint(replace(earlier, overwrite_output_dir=True), data)


def test_evaluation_refuses_options_it_would_ignore(tmp_path):
    from hesp_hf.commands.evaluate import EvaluationArguments, evaluate_checkpoint
    from hesp_hf.run.arguments import DataArguments

    places = EvaluationArguments(checkpoint=str(tmp_path / "run"), output_dir=str(tmp_path / "eval"))
    base = {"dataset": "custom", "class_names": ["a", "b"], "test_annotation": str(tmp_path / "test.csv")}
    for given, message in (
        ({"augmentation": "none"}, "--augmentation: training augmentation"),
        ({"crop_scale_min": 0.5}, "--crop_scale_min: training augmentation"),
        ({"face_margin": 0.3}, "--face_margin apply with --face_crop true only"),
    ):
        with pytest.raises(ValueError, match=message):
            evaluate_checkpoint(places, DataArguments(**base, **given))
    # With --face_crop the face settings are taken (and the missing checkpoint is the next thing reported).
    with pytest.raises(OSError):
        evaluate_checkpoint(places, DataArguments(**base, face_crop=True, face_margin=0.3))
