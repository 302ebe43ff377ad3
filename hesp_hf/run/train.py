"""One training run, end to end: data -> model -> `Trainer` -> threshold calibration -> test report -> saved,
card-carrying checkpoint -> optional Hub upload. `hesp-train` / `scripts/train.py` parse the options once into the
three argument dataclasses and call `run`; `train(**options)` is the same from Python.

Under `accelerate launch` / `torchrun` every process runs this; predictions are gathered over all of them by the
`Trainer`, and only the main process writes.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, set_seed

from ..atomic_files import write_text_atomic
from ..calibration import (
    calibrate,
    calibration_records,
    card_text,
    conformal_rank,
    out_of_reach,
)
from ..data import OpenSetSplit, clip_dataset, collate_clips
from ..data.features import dataset_features
from ..data.manifest import read_manifest
from ..evaluation.baselines import baseline_report, checkpoint_baseline_metrics
from ..evaluation.report import OpenSetPredictions, predict_open_set, write_open_set_report
from ..hub.model_card import (
    HubDataset,
    describe_backbone,
    known_ness_description,
    render_model_card,
    write_model_card,
)
from ..hub.upload import check_hub_access, push_folder
from ..metrics import trainer_compute_metrics
from ..training import HESPTrainer, fit_class_prototypes, log_training_health
from ..training.prototypes import FALLBACK_MARGIN
from .arguments import DataArguments, HESPTrainingArguments, ModelArguments, training_arguments
from .outputs import (
    check_output_dir,
    data_description,
    resolve_resume,
    run_arguments,
    selection_saw_unknown_classes,
    split_description,
    training_summary,
)
from .setup import (
    CLIP_LOG_NAME,
    build_model_and_processor,
    choose_selection_metric,
    clip_report_summary,
    clip_transform,
    dataset_source,
    fresh_clip_log,
    load_split,
    make_augmentation,
    place_visual_prompt,
    resolve_annotations,
)


logger = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """A finished training run: its folder (model, processor, metrics.json, curves, model card) and the test
    metrics (`{}` on processes other than the first under DDP)."""

    output_dir: Path
    metrics: dict[str, Any]


def train(**options: Any) -> TrainingRun:
    """Train HESP on one open-set split, calibrate, evaluate and save: `scripts/train.py` as a Python call.

    `options` are the fields of [`ModelArguments`], [`DataArguments`] and [`HESPTrainingArguments`] by name, with
    Python values (`known_labels=["happy", "sad"]`, `num_train_epochs=12`); `output_dir` is required, and `dataset`
    (annotation files) or `dataset_name` (a `datasets` Hub id, folder or builder, or a `Dataset` / `DatasetDict`).

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
    warn_on_milestones(model_args.milestones, training_args.num_train_epochs)
    model, processor = build_model_and_processor(model_args, data_args, split.known_labels)
    warn_on_calibration_size(sum(r.label >= 0 for r in split.validation), model_args.known_acceptance)

    crop = (processor.crop_size.height, processor.crop_size.width)
    fresh_clip_log(output_dir / CLIP_LOG_NAME, training_args, resuming=resume is not None)
    augmentation = make_augmentation(data_args, crop)
    train_transform = clip_transform(
        processor, data_args, output_dir, "train", training=True, augmentation=augmentation
    )
    eval_transform = clip_transform(processor, data_args, output_dir, "validation")
    validation_set = clip_dataset(split.validation, eval_transform)
    if model.config.use_visual_prompt and model.config.visual_prompt_location == "dataset":
        place_visual_prompt(model, split, eval_transform.for_split("train"), model_args.visual_prompt_estimation_clips)

    choose_selection_metric(training_args, has_unknown_validation=any(r.label < 0 for r in split.validation))
    if data_args.streaming and model_args.train_sampling == "class_stratified":
        # A sampler needs random access; a stream is read in its own order, one batch in memory.
        logger.warning(
            "--streaming: training batches follow the stream's order (train_sampling=%s needs random access and does "
            "not apply); shuffle a dataset sorted by class before streaming it.",
            model_args.train_sampling,
        )
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, complete, at the end
    trainer = HESPTrainer(
        model=model,
        args=training_args,
        train_dataset=clip_dataset(split.train, train_transform),
        eval_dataset=validation_set if len(validation_set) else None,
        data_collator=collate_clips,
        processing_class=processor,
        compute_metrics=trainer_compute_metrics(split.unknown_label_id, model.config.open_set_score),
        milestones=model_args.milestones,
        gamma=model_args.gamma,
        momentum=model_args.momentum,
        pixel_prompt_step=model_args.pixel_prompt_step,
        visual_prompt_lr_scale=model_args.visual_prompt_lr_scale,
        train_sampling=model_args.train_sampling,
    )
    trainer.train(resume_from_checkpoint=resume)
    # The frozen CLIP's features of the training clips, read once for the prototype head's check and the baselines.
    train_clips = clip_dataset(split.train, eval_transform.for_split("train"))
    report_baselines = training_args.report_baselines and trainer.is_world_process_zero()
    frozen_train = None
    if model_args.inference_logits == "prototypes" or report_baselines:
        batching = (training_args.per_device_eval_batch_size, training_args.dataloader_num_workers)
        frozen_train = dataset_features(model, train_clips, *batching)
    prototype_fit = None
    if model_args.inference_logits == "prototypes":  # from the training clips alone, before calibration sees any
        prototype_fit = fit_class_prototypes(trainer, train_clips, frozen_train)
    health = trainer.trajectory.assess(prototype_fit, FALLBACK_MARGIN, visual_prompt=model.config.use_visual_prompt)
    if trainer.is_world_process_zero():
        log_training_health(health)

    # Calibrate on the known validation clips (never the test list), then evaluate the test set once.
    validation_known = clip_dataset([r for r in split.validation if r.label >= 0], eval_transform)
    if len(validation_known):
        calibrate_on_validation(model.config, predict_open_set(trainer, validation_known), model_args.known_acceptance)
    else:
        logger.warning("No known validation clips: unknown_threshold stays uncalibrated.")
    test_set = clip_dataset(split.test, eval_transform.for_split("test"))
    predictions = predict_open_set(trainer, test_set)
    baselines = None
    if report_baselines:  # the frozen CLIP, same clips, no training
        baselines = checkpoint_baseline_metrics(model, train_clips, test_set, *batching, train_features=frozen_train)

    # The model and its processor first: a metrics.json in the folder then means the model beside it is complete
    # (hesp-protocol takes a split with metrics.json as finished).
    trainer.save_model(str(output_dir))  # rank 0 writes the model, the processor and the modeling/ code files
    metrics: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        save_tokenizer(model_args.clip_model, output_dir)
        extra = {
            "baselines": baselines,
            "prototype_leave_one_out_accuracy": prototype_fit,
            "training_health": health.to_dict(),
        }
        metrics = write_run_outputs(
            output_dir, trainer, split, predictions, extra, model_args, data_args, training_args
        )
        if push_to_hub:
            push_folder(
                output_dir, training_args.hub_model_id, training_args.hub_token, bool(training_args.hub_private_repo)
            )
    # Every process returns once the run is written: one that went on (or exited) while rank 0 still wrote the outputs
    # sometimes aborted in gloo's threads ("terminate called without an active exception").
    trainer.accelerator.wait_for_everyone()
    return metrics


def save_tokenizer(clip_model: str, output_dir: Path) -> None:
    """The backbone's tokenizer beside the model, so that the checkpoint reads new texts (zero-shot candidates, the
    closest description of an unknown clip: `hesp_hf.inference.zero_shot`)."""
    try:
        AutoTokenizer.from_pretrained(clip_model).save_pretrained(output_dir)
    except (OSError, ValueError) as error:
        logger.warning("No tokenizer saved with the model (%s): zero-shot naming will need one.", error)


def warn_on_milestones(milestones: list[int], epochs: float) -> None:
    if milestones and min(milestones) >= epochs:
        logger.warning(
            "--milestones %s all lie at or after the last epoch (%g): the learning rate never decays; pass milestones "
            "within the run (e.g. --milestones %d %d).",
            milestones,
            epochs,
            max(1, int(epochs * 2 / 3)),
            max(1, int(epochs * 5 / 6)),
        )


def write_run_outputs(
    output_dir: Path,
    trainer: HESPTrainer,
    split: OpenSetSplit,
    predictions: OpenSetPredictions,
    measured: dict[str, Any],
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: HESPTrainingArguments,
) -> dict[str, Any]:
    """The run's records beside the saved model: metrics.json with curves and confusion table (and, in `measured`,
    the baselines on the frozen CLIP and the prototype head's choice, when computed), split.txt, the model card and
    run_arguments.json; returns the test metrics."""
    config = trainer.model.config
    face_crop = trainer.processing_class.face_crop
    label_names = [config.id2label[i] for i in range(config.num_labels)]
    source = dataset_source(data_args)
    extra = {
        **({"data_source": source.describe()} if source else {}),
        "split": split_description(split, data_args),
        "validation_clips": len(split.validation),
        **({"validation_from": split.validation_from} if split.validation_from else {}),
        "selection_saw_unknown_classes": selection_saw_unknown_classes(split),
        "world_size": training_args.world_size,
    }
    extra.update(clip_report_summary(output_dir / CLIP_LOG_NAME, ("train", "validation", "test"), face_crop))
    if measured.get("baselines"):
        extra.update(baseline_report(measured["baselines"]))
    if measured.get("training_health"):
        extra["training_health"] = measured["training_health"]
    # The conformal guarantee and the probabilities' calibration, measured on the test set (hesp_hf.calibration).
    extra.update(calibration_records(config, predictions.logits, predictions.scores, predictions.labels))
    if measured.get("prototype_leave_one_out_accuracy"):  # which space the prototype head chose, and why
        extra["prototype_space"] = config.prototype_space
        extra["prototype_leave_one_out_accuracy"] = measured["prototype_leave_one_out_accuracy"]
    metrics = write_open_set_report(
        output_dir,
        predictions.logits,
        predictions.labels,
        label_names,
        config.unknown_threshold,
        title=extra["split"],
        extra=extra,
        score=config.open_set_score,
        branch_logits=predictions.branch_logits,
    )
    write_text_atomic(output_dir / "split.txt", split.summary() + "\n")
    manifest = None if source else read_manifest(resolve_annotations(data_args)[0])
    hub_dataset = (
        HubDataset(source.hub_id, source.config_name, source.test_split) if source and source.hub_id else None
    )
    card = render_model_card(
        repo_id=training_args.hub_model_id or f"hesp-{data_args.dataset or source.short_name.split('/')[-1]}",
        backbone=describe_backbone(model_args.clip_model),
        dataset_name="synthetic"
        if manifest
        else (source.hub_id or f"{source.short_name} (local)" if source else data_args.dataset),
        data_description=data_description(split, manifest, source),
        synthetic_data=manifest is not None,
        known_labels=split.known_labels,
        unknown_labels=[split.preset.class_names[i] for i in split.unknown_classes],
        metrics=metrics,
        split_description=extra["split"],
        training_summary=training_summary(model_args, training_args, split),
        temporal_pooling=config.temporal_pooling,
        threshold=config.unknown_threshold,
        keep_share=model_args.known_acceptance,
        calibration=card_text(metrics),
        known_ness=known_ness_description(config),
        use_visual_prompt=config.use_visual_prompt,
        hub_dataset=hub_dataset,
    )
    write_model_card(card, output_dir)
    write_text_atomic(output_dir / "run_arguments.json", json.dumps(run_arguments(model_args, data_args), indent=2))
    return metrics


# ------------------------------------------------------------------------------- calibrated decisions (the threshold)
def warn_on_calibration_size(n: int, acceptance: float) -> None:
    """Before training: say when the known validation clips are too few for the level asked (`n < 1/alpha - 1`)."""
    if n and conformal_rank(n, acceptance) == 0:
        logger.warning(
            "%s Hold out more validation clips (--validation_fraction) or ask a lower level.",
            out_of_reach(n, acceptance),
        )


def calibrate_on_validation(config: Any, validation: OpenSetPredictions, acceptance: float) -> None:
    """The conformal threshold from the known validation clips' known-ness scores, and the temperature of the
    known-class probabilities from their logits and labels (hesp_hf.calibration)."""
    num_known = config.num_known_labels
    calibrate(config, validation.scores, acceptance, validation.logits[:, :num_known], validation.labels)
