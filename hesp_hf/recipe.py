"""One training run, end to end: data -> model -> `Trainer` -> threshold calibration -> test report -> saved,
card-carrying checkpoint -> optional Hub upload. `scripts/train.py` parses the arguments and calls `run_training`.

Under `accelerate launch` / `torchrun` every process runs this; predictions are gathered over all of them by the
`Trainer`, and only the main process writes.
"""

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .arguments import DataArguments, HESPTrainingArguments, ModelArguments, name_list, training_arguments
from .atomic_files import write_text_atomic
from .data import (
    ClipAugmentation,
    ClipTransform,
    OpenSetSplit,
    clip_dataset,
    collate_clips,
    load_open_set_split,
    read_annotation,
)
from .data.dataset import read_clip_log
from .data.presets import get_preset
from .data.protocol import test_only_split
from .evaluation import predict_open_set, write_open_set_report
from .hub import check_hub_access, push_folder
from .metrics import trainer_compute_metrics
from .model_card import describe_backbone, known_ness_description, render_model_card, write_model_card
from .modeling.video_processing_hesp import HESPVideoProcessor
from .pairing import model_and_processor_from_clip
from .synthetic import synthetic_spec_of
from .training import HESPTrainer, calibrate_threshold


logger = logging.getLogger(__name__)


def resolve_annotations(data_args: DataArguments) -> tuple[str, str]:
    """The train and test annotations: given ones, else the preset's usual files under `data_root`."""
    if data_args.train_annotation and data_args.test_annotation:
        return data_args.train_annotation, data_args.test_annotation
    if not data_args.data_root:
        raise ValueError("Pass --train_annotation and --test_annotation, or --data_root for the preset's own files.")
    preset = get_preset(data_args.dataset, data_args.class_names, data_args.label_base)
    train, test = preset.default_annotations(data_args.fold)
    root = Path(data_args.data_root)
    return data_args.train_annotation or str(root / train), data_args.test_annotation or str(root / test)


def load_split(data_args: DataArguments, seed: int) -> OpenSetSplit:
    train_annotation, test_annotation = resolve_annotations(data_args)
    return load_open_set_split(
        data_args.dataset,
        train_annotation,
        test_annotation,
        data_root=data_args.data_root,
        split_index=data_args.split_index,
        known_labels=data_args.known_labels,
        label_names=data_args.class_names,
        label_base=data_args.label_base,
        validation_fraction=data_args.validation_fraction,
        seed=seed,
        validation_unknown_fraction=data_args.validation_unknown_fraction,
        allow_empty_known_classes=data_args.allow_empty_known_classes,
    )


def load_test_split(data_args: DataArguments, checkpoint: str, known_labels: list[str]) -> OpenSetSplit:
    """The test set of a trained model from `--test_annotation` alone: the checkpoint's known classes; a custom
    dataset's class list from `--class_names` or, when not given, the `run_arguments.json` the training wrote."""
    class_names = data_args.class_names  # a list already (DataArguments normalises it)
    if class_names is None and data_args.dataset == "custom":
        recorded = Path(checkpoint) / "run_arguments.json"
        if recorded.exists():
            data = json.loads(recorded.read_text()).get("data", {})
            class_names = name_list(data.get("class_names") or data.get("label_names"))
        if class_names is None:
            raise ValueError(
                f"A custom dataset needs --class_names (all classes, index order); {checkpoint} has none."
            )
    preset = get_preset(data_args.dataset, class_names, data_args.label_base)
    test_annotation = data_args.test_annotation
    if not test_annotation:
        if not data_args.data_root:
            raise ValueError("Pass --test_annotation, or --data_root for the preset's own test list.")
        test_annotation = str(Path(data_args.data_root) / preset.default_annotations(data_args.fold)[1])
    records = read_annotation(test_annotation, preset, data_args.data_root)
    return test_only_split(preset, records, known_labels)


def config_overrides(model_args: ModelArguments) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "num_frames": model_args.num_frames,
        "n_ctx": model_args.n_ctx,
        "temporal_pooling": model_args.temporal_pooling,
        "visual_prompt_location": model_args.visual_prompt_location,
        "freeze_vision_tower": model_args.freeze_vision_tower,
        "use_visual_prompt": model_args.use_visual_prompt,
        "use_reciprocal_points": model_args.use_reciprocal_points,
        "open_set_score": model_args.open_set_score,
        "inference_logits": model_args.inference_logits,
        "reciprocal_distance": model_args.reciprocal_distance,
    }
    return overrides | model_args.loss_overrides()


# Files whose presence means a folder holds a trained model (a finished run or a checkpoint folder).
MODEL_FILES = ("config.json", "model.safetensors", "metrics.json")


def check_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Refuse to train into a folder holding another run, unless it is resumed or `--overwrite_output_dir` says to
    replace it; then its old `checkpoint-*` folders go, so none is left that does not match the new model."""
    if resuming or not output_dir.is_dir():
        return
    found = [name for name in MODEL_FILES if (output_dir / name).exists()]
    checkpoints = sorted(path.name for path in output_dir.glob("checkpoint-*"))
    if not (found or checkpoints):
        return
    if not overwrite:
        raise ValueError(
            f"--output_dir {output_dir} already holds a run ({', '.join(found + checkpoints[:3])}): pass "
            "--overwrite_output_dir to replace it, --resume_from_checkpoint to continue it, or another --output_dir."
        )
    for name in checkpoints:
        shutil.rmtree(output_dir / name)
    logger.warning(
        "Replacing the run in %s (--overwrite_output_dir); removed %d old checkpoints.", output_dir, len(checkpoints)
    )


def choose_selection_metric(training_args: TrainingArguments, has_unknown_validation: bool) -> None:
    """Best-model selection: `--metric_for_best_model` when given; otherwise OSCR + AUROC on the validation subset
    (accuracy when it holds no unknown clip), higher is better."""
    if getattr(training_args, "metric_given", True):
        return
    training_args.metric_for_best_model = "oscr_plus_auroc" if has_unknown_validation else "accuracy"
    training_args.greater_is_better = True
    if not has_unknown_validation:
        logger.warning("The validation subset has no unknown clips: model selection uses validation accuracy.")


@dataclass
class TrainingRun:
    """A finished training run: its folder (model, processor, metrics.json, curves, model card) and the test
    metrics (`{}` on processes other than the first under DDP)."""

    output_dir: Path
    metrics: dict[str, Any]


def train(**options: Any) -> TrainingRun:
    """Train HESP on one open-set split, calibrate, evaluate and save: `scripts/train.py` as a Python call.

    `options` are the fields of [`ModelArguments`], [`DataArguments`] and [`HESPTrainingArguments`] by name, with
    Python values (`known_labels=["happy", "sad"]`, `num_train_epochs=12`); `dataset` and `output_dir` are required.

    Example:

    ```python
    >>> import hesp_hf
    >>> run = hesp_hf.train(
    ...     dataset="custom", class_names=["calm", "smile", "frown", "gasp"], known_labels=["calm", "smile", "frown"],
    ...     train_annotation="data/train.csv", test_annotation="data/test.csv",
    ...     clip_model="openai/clip-vit-base-patch32", output_dir="runs/x", num_train_epochs=10,
    ... )
    >>> run.metrics["auroc"], run.output_dir
    ```
    """
    return run(*training_arguments(**options))


def train_from_argv(argv: Sequence[str]) -> TrainingRun:
    """`train` from `scripts/train.py`'s command-line arguments (as the script parses them)."""
    from .cli import DataclassArgumentParser

    parser = DataclassArgumentParser((ModelArguments, DataArguments, HESPTrainingArguments))
    return run(*parser.parse_args_into_dataclasses(args=list(argv)))


def options_argv(options: Mapping[str, Any]) -> list[str]:
    """`train` options as `scripts/train.py` arguments (`["--name", "value", ...]`: lists as several values, booleans
    as true/false, None left out), for running the same training as a script."""
    argv: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        argv += [f"--{name}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return argv


def run(model_args: ModelArguments, data_args: DataArguments, training_args: HESPTrainingArguments) -> TrainingRun:
    """Seed, then `run_training`."""
    set_seed(training_args.seed)
    metrics = run_training(model_args, data_args, training_args)
    return TrainingRun(Path(training_args.output_dir), metrics)


def run_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: HESPTrainingArguments
) -> dict[str, Any]:
    """Train, calibrate, evaluate and save; returns the test metrics (on every process)."""
    output_dir = Path(training_args.output_dir)
    check_hub_access(training_args)
    resume = resolve_resume(training_args.resume_from_checkpoint, output_dir)
    if training_args.process_index == 0:
        check_output_dir(output_dir, training_args.overwrite_output_dir, resuming=resume is not None)
    split = load_split(data_args, training_args.seed)  # logs the split's summary
    if model_args.milestones and min(model_args.milestones) >= training_args.num_train_epochs:
        logger.warning(
            "--milestones %s all lie at or after the last epoch (%g): the learning rate never decays; pass milestones "
            "within the run (e.g. --milestones %d %d).",
            model_args.milestones,
            training_args.num_train_epochs,
            max(1, int(training_args.num_train_epochs * 2 / 3)),
            max(1, int(training_args.num_train_epochs * 5 / 6)),
        )

    overrides = config_overrides(model_args)
    model, processor = model_and_processor_from_clip(
        model_args.clip_model,
        split.known_labels,
        num_frames=overrides.pop("num_frames"),
        processor_kwargs=face_settings(data_args),
        **overrides,
    )
    crop = (processor.crop_size.height, processor.crop_size.width)
    clip_log = fresh_clip_log(output_dir / CLIP_LOG_NAME, training_args, resuming=resume is not None)
    train_transform = clip_transform(
        processor, data_args, output_dir, "train", training=True, augmentation=make_augmentation(data_args, crop)
    )
    eval_transform = clip_transform(processor, data_args, output_dir, "validation")
    train_set = clip_dataset(split.train, train_transform)
    validation_set = clip_dataset(split.validation, eval_transform)
    validation_known = clip_dataset([r for r in split.validation if r.label >= 0], eval_transform)
    test_set = clip_dataset(split.test, eval_transform.for_split("test"))

    if model.config.visual_prompt_location == "dataset":
        place_visual_prompt(model, split, eval_transform.for_split("train"), model_args.visual_prompt_estimation_clips)

    choose_selection_metric(training_args, has_unknown_validation=any(r.label < 0 for r in split.validation))
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, complete, at the end

    trainer = HESPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=validation_set if len(validation_set) else None,
        data_collator=collate_clips,
        compute_metrics=trainer_compute_metrics(split.unknown_label_id, model.config.open_set_score),
        milestones=model_args.milestones,
        gamma=model_args.gamma,
        momentum=model_args.momentum,
        pixel_prompt_step=model_args.pixel_prompt_step,
        train_sampling=model_args.train_sampling,
    )
    trainer.train(resume_from_checkpoint=resume)

    # Calibrate on the known validation clips (never the test list), then evaluate the test set once.
    if len(validation_known):
        validation_predictions = predict_open_set(trainer, validation_known)
        model.config.unknown_threshold = calibrate_threshold(validation_predictions.scores, model_args.keep_share)
    else:
        logger.warning("No known validation clips: unknown_threshold stays uncalibrated.")
    predictions = predict_open_set(trainer, test_set)

    # The model and its processor first: a metrics.json in the folder then means the model beside it is complete
    # (hesp-protocol takes a split with metrics.json as finished).
    trainer.save_model(str(output_dir))  # rank 0 writes; copies the modeling/ files and sets auto_map
    metrics: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        extra = {
            "split": split_description(split, data_args),
            "validation_clips": len(split.validation),
            "world_size": training_args.world_size,
        }
        extra.update(clip_report_summary(clip_log, ("train", "validation", "test"), processor.face_crop))
        metrics = write_open_set_report(
            output_dir,
            predictions.logits,
            predictions.labels,
            label_names,
            model.config.unknown_threshold,
            title=extra["split"],
            extra=extra,
            score=model.config.open_set_score,
            branch_logits=predictions.branch_logits,
        )
        write_text_atomic(output_dir / "split.txt", split.summary() + "\n")
        synthetic = synthetic_spec_of(resolve_annotations(data_args)[0])
        card = render_model_card(
            repo_id=training_args.hub_model_id or f"hesp-{data_args.dataset}",
            backbone=describe_backbone(model_args.clip_model),
            dataset_name="synthetic" if synthetic else data_args.dataset,
            data_description=data_description(split, synthetic),
            synthetic_data=synthetic is not None,
            known_labels=split.known_labels,
            unknown_labels=[split.preset.class_names[i] for i in split.unknown_classes],
            metrics=metrics,
            split_description=split_description(split, data_args),
            training_summary=training_summary(model_args, training_args, split),
            temporal_pooling=model.config.temporal_pooling,
            threshold=model.config.unknown_threshold,
            keep_share=model_args.keep_share,
            known_ness=known_ness_description(model.config),
        )
        write_model_card(card, output_dir)
        write_text_atomic(
            output_dir / "run_arguments.json", json.dumps(run_arguments(model_args, data_args), indent=2)
        )
        if push_to_hub:
            push_folder(
                output_dir, training_args.hub_model_id, training_args.hub_token, bool(training_args.hub_private_repo)
            )
    return metrics


CLIP_LOG_NAME = "clip_report.tsv"
FACE_CACHE_NAME = "face_tracks"


def face_settings(data_args: DataArguments) -> dict[str, Any]:
    """The processor's face-cropping settings from the data arguments."""
    return {
        "face_crop": data_args.face_crop,
        "face_margin": data_args.face_margin,
        "face_min_score": data_args.face_min_score,
    }


def clip_transform(
    processor: HESPVideoProcessor,
    data_args: DataArguments,
    output_dir: Path,
    split: str,
    training: bool = False,
    augmentation: Any = None,
) -> ClipTransform:
    """The data transform of a run: the data arguments' clip policies, the run's clip report and face-track cache."""
    return ClipTransform(
        processor,
        training=training,
        augmentation=augmentation,
        on_bad_clip=data_args.on_bad_clip,
        on_truncated_clip=data_args.on_truncated_clip,
        clip_log=output_dir / CLIP_LOG_NAME,
        split=split,
        face_cache=output_dir / FACE_CACHE_NAME,
    )


def fresh_clip_log(path: Path, training_args: TrainingArguments, resuming: bool) -> Path:
    """The run's log of skipped and truncated clips, emptied for a fresh run (kept when resuming, so the counts
    cover the whole run); the main process empties it before any process reads a clip."""
    with training_args.main_process_first(local=False, desc="clip log"):
        if training_args.process_index == 0 and not resuming:
            path.unlink(missing_ok=True)
    return path


def clip_report_summary(clip_log: Path, splits: tuple[str, ...], face_crop: bool = False) -> dict[str, Any]:
    """`metrics.json` entries for the clips a run did not use in full: distinct counts per split (always present, so
    a zero is a statement), and the log that names them."""
    report = read_clip_log(clip_log)
    summary: dict[str, Any] = report.counts(splits, face_crop)
    what = {
        "were skipped": report.skipped,
        "were used although truncated": report.truncated,
        "showed no face (used whole)": report.no_face,
    }
    for description, by_split in what.items():
        for split_name, paths in by_split.items():
            logger.warning("%d %s clip(s) %s (listed in %s).", len(paths), split_name, description, clip_log)
    if report:
        summary["clip_report"] = clip_log.name
    return summary


def resolve_resume(value: str | bool | None, output_dir: Path) -> str | None:
    """`--resume_from_checkpoint`: a checkpoint folder, or `True` for the last `checkpoint-*` in `output_dir` (as the
    transformers examples do)."""
    if value is None or value is False or str(value).lower() in ("", "false", "none"):
        return None
    if value is True or str(value).lower() == "true":
        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint True: no checkpoint-* folder in {output_dir} to resume from.")
        logger.info("Resuming from the last checkpoint, %s", last)
        return last
    return str(value)


def make_augmentation(data_args: DataArguments, size: tuple[int, int]) -> ClipAugmentation | None:
    """`flip_crop`: flip + random resized crop (the paper's); `flip`: flip alone; `none`."""
    if data_args.augmentation == "none":
        return None
    if data_args.augmentation == "flip":
        return ClipAugmentation(size=size, scale=(1.0, 1.0), ratio=(size[1] / size[0],) * 2)
    if data_args.augmentation == "flip_crop":
        return ClipAugmentation(size=size, scale=(data_args.crop_scale_min, 1.0))
    raise ValueError(f"--augmentation must be flip_crop, flip or none, got '{data_args.augmentation}'.")


def place_visual_prompt(model: Any, split: OpenSetSplit, transform: ClipTransform, max_clips: int) -> None:
    """Put the visual prompt where the frozen CLIP's expression saliency is highest over training clips."""
    records = list(split.train[:max_clips])
    if not records:
        return
    dataset = clip_dataset(records, transform)
    batches = (
        collate_clips([dataset[i] for i in range(start, min(start + 8, len(dataset)))])["pixel_values_videos"]
        for start in range(0, len(dataset), 8)
    )
    batches = (batch for batch in batches if len(batch))  # a batch of skipped clips is empty
    model.eval()
    model.config.visual_prompt_center = model.estimate_visual_prompt_location(batches)
    model.train()


def data_description(split: OpenSetSplit, synthetic: dict | None) -> str:
    """The training data in words for the model card."""
    counts = (
        f"{len(split.train)} training clips of the known classes ({len(split.validation)} more held out for "
        f"validation), {len(split.test)} test clips"
    )
    if synthetic is not None:
        return (
            f"Synthetic facial-expression clips generated by `hesp_hf.synthetic` (seed {synthetic['seed']}, "
            f"{synthetic.get('train_per_class')} training clips per class, {synthetic.get('size')}x"
            f"{synthetic.get('size')} pixels): {counts}."
        )
    if split.preset.name.lower() == "custom":
        return f"The user's own annotated clips (classes: {', '.join(split.preset.class_names)}): {counts}."
    return f"{split.preset.name}: {counts}. The dataset is not distributed with this model; see its own licence."


def split_description(split: OpenSetSplit, data_args: DataArguments) -> str:
    which = f"split {data_args.split_index}" if data_args.split_index is not None else "explicit known classes"
    fold = f", fold {data_args.fold}" if data_args.fold is not None else ""
    return (
        f"{split.preset.name}{fold}, {which}: {len(split.known_classes)} known / {len(split.unknown_classes)} unknown"
    )


def training_summary(model_args: ModelArguments, training_args: TrainingArguments, split: OpenSetSplit) -> str:
    return (
        f"{len(split.train)} training clips ({len(split.validation)} held out for validation), "
        f"{training_args.num_train_epochs:g} epochs"
        + (f" / {training_args.max_steps} steps" if training_args.max_steps > 0 else "")
        + f", SGD lr {training_args.learning_rate:g}, momentum {model_args.momentum:g}, weight decay "
        f"{training_args.weight_decay:g}, x{model_args.gamma:g} at epochs {', '.join(map(str, model_args.milestones))}, batch "
        f"{training_args.per_device_train_batch_size} per device x {training_args.world_size} device(s), "
        f"{model_args.num_frames} frames per clip, seed {training_args.seed}. " + recipe_summary(model_args)
    )


def recipe_summary(model_args: ModelArguments) -> str:
    """The recipe in words for the model card: its name, the fields given on top of it, and why hesp-hf's differs."""
    text = f"Recipe `{model_args.recipe}`"
    overrides = model_args.recipe_overrides()
    if overrides:
        text += " with " + ", ".join(f"`{name}={value}`" for name, value in overrides.items())
    text += (
        f": {model_args.n_ctx} context vectors per class, `{model_args.train_sampling}` batches"
        + (
            f", reciprocal distance `{model_args.reciprocal_distance}`"
            if model_args.use_reciprocal_points
            else ", no reciprocal points"
        )
        + "."
    )
    if model_args.recipe == "hesp-hf":
        text += (
            " hesp-hf's recipe departs from the paper where the paper's form fails on frozen CLIP features: the ARPL "
            "distance ranked unknown clips above known ones, and a shuffled first batch dominated by one class could "
            "collapse training (hesp-hf docs/open-set-quality.md)."
        )
    return text


def run_arguments(model_args: ModelArguments, data_args: DataArguments) -> dict[str, Any]:
    return {"model": asdict(model_args), "data": asdict(data_args)}
