"""Evaluate a saved HESP checkpoint (folder or Hub id) on the test set of an open-set split.

    python scripts/run_evaluation.py --checkpoint runs/mafw-0 --dataset mafw --data_root MAFW --output_dir runs/mafw-0/eval
    python scripts/run_evaluation.py --checkpoint runs/x --dataset custom --test_annotation data/test.csv --output_dir ...

The checkpoint knows its classes, so a test annotation (or a preset's `--data_root`) is enough: the known classes are
the checkpoint's, every other class is unknown; a custom dataset's class list comes from `--class_names` or the
`run_arguments.json` training left in the checkpoint. Given a split definition (`--split_index` / `--known_labels`,
`--train_annotation`), it is checked against the checkpoint instead.

Writes `metrics.json`, `curves.png` and `confusion.csv` to the output folder, using the checkpoint's calibrated
`unknown_threshold` for the confusion table.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from hesp_hf.calibration import calibration_records
from hesp_hf.commands.cli import DataclassArgumentParser, run_command
from hesp_hf.data import clip_dataset, collate_clips
from hesp_hf.evaluation.baselines import baseline_report, checkpoint_baseline_metrics
from hesp_hf.evaluation.report import predict_open_set, write_open_set_report
from hesp_hf.pairing import load_pair
from hesp_hf.run.arguments import DataArguments, changed_options
from hesp_hf.run.outputs import MODEL_FILES, split_description
from hesp_hf.run.setup import (
    CLIP_LOG_NAME,
    clip_report_summary,
    clip_transform,
    face_settings,
    fresh_clip_log,
    load_split,
    load_test_split,
)
from hesp_hf.training import HESPTrainer


@dataclass
class EvaluationArguments:
    checkpoint: str = field(metadata={"help": "A trained HESP folder or Hub id."})
    output_dir: str = field(metadata={"help": "Where metrics.json, curves.png and confusion.csv are written."})
    batch_size: int = field(default=32, metadata={"help": "Clips per forward pass."})
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes for decoding."})
    bf16_autocast: bool = field(default=False, metadata={"help": "Run the model under bfloat16 autocast."})
    seed: int = field(default=0, metadata={"help": "Seed of the split's validation hold-out (as in training)."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace an earlier evaluation (metrics.json) in --output_dir."}
    )
    report_baselines: bool = field(
        default=False,
        metadata={
            "help": "Also score the test set with the training-free baselines on the checkpoint's frozen CLIP, fitted "
            "on the split's known training clips (needs the training split: --train_annotation, or a preset's "
            "--data_root with --split_index / --known_labels)."
        },
    )


def main() -> None:
    parser = DataclassArgumentParser((EvaluationArguments, DataArguments))
    eval_args, data_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    evaluate_checkpoint(eval_args, data_args)


def evaluate_checkpoint(eval_args: EvaluationArguments, data_args: DataArguments) -> dict[str, Any]:
    """Evaluate a trained checkpoint on an open-set test set; writes `metrics.json`, `curves.png`, `confusion.csv`
    and `clip_report.tsv` into `eval_args.output_dir` and returns the metrics (`{}` on processes other than the
    first). What `scripts/run_evaluation.py` runs; callable in process (the demo does)."""
    holds_model = [name for name in MODEL_FILES[:2] if (Path(eval_args.output_dir) / name).exists()]
    if holds_model or Path(eval_args.output_dir).resolve() == Path(eval_args.checkpoint).resolve():
        raise ValueError(
            f"--output_dir {eval_args.output_dir} holds a trained model ({', '.join(holds_model) or 'the checkpoint'}):"
            " evaluation never writes over training outputs; choose another folder (e.g. <checkpoint>/eval)."
        )
    if (Path(eval_args.output_dir) / "metrics.json").exists() and not eval_args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {eval_args.output_dir} already holds an evaluation (metrics.json): choose another folder, "
            "or pass --overwrite_output_dir to replace it."
        )
    _refuse_ignored_options(data_args)
    model, processor = load_pair(eval_args.checkpoint)
    if data_args.train_annotation or data_args.split_index is not None or data_args.known_labels:
        split = load_split(data_args, eval_args.seed)  # the training split's definition, checked against the model
    else:  # the checkpoint knows its classes: the test annotation is enough
        split = load_test_split(data_args, eval_args.checkpoint, model.config.known_labels)
    if model.config.known_labels != split.known_labels:
        raise ValueError(
            f"The checkpoint knows {model.config.known_labels} but the split's known classes are {split.known_labels}."
        )
    if data_args.face_crop:  # raw footage for a model trained on crops (a model trained with --face_crop crops anyway)
        for name, value in face_settings(data_args).items():
            setattr(processor, name, value)
    clip_log = Path(eval_args.output_dir) / CLIP_LOG_NAME
    transform = clip_transform(processor, data_args, Path(eval_args.output_dir), "test")
    test_set = clip_dataset(split.test, transform)
    if eval_args.report_baselines and not split.train:
        raise ValueError(
            "--report_baselines fits the baselines on the known training clips: pass the training split too "
            "(--train_annotation, or --data_root with --split_index / --known_labels)."
        )
    trainer = HESPTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=eval_args.output_dir,
            per_device_eval_batch_size=eval_args.batch_size,
            dataloader_num_workers=eval_args.num_workers,
            remove_unused_columns=False,
            report_to="none",
            bf16=eval_args.bf16_autocast,
            use_cpu=not torch.cuda.is_available(),
        ),
        data_collator=collate_clips,
    )
    fresh_clip_log(clip_log, trainer.args, resuming=False)  # a new evaluation counts afresh
    predictions = predict_open_set(trainer, test_set)
    if not trainer.is_world_process_zero():
        return {}
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    baselines = {}
    if eval_args.report_baselines:
        train_set = clip_dataset(split.train, transform.for_split("train"))
        metrics = checkpoint_baseline_metrics(model, train_set, test_set, eval_args.batch_size, eval_args.num_workers)
        baselines = baseline_report(metrics)
    return write_open_set_report(
        eval_args.output_dir,
        predictions.logits,
        predictions.labels,
        label_names,
        model.config.unknown_threshold,
        title=split_description(split, data_args),
        extra={
            "checkpoint": eval_args.checkpoint,
            "bf16_autocast": eval_args.bf16_autocast,
            "test_clips": len(split.test),
            **clip_report_summary(clip_log, ("test",), processor.face_crop),
            **baselines,
            # the saved guarantee and temperature, checked on this test set (hesp_hf.calibration)
            **calibration_records(model.config, predictions.logits, predictions.scores, predictions.labels),
        },
        score=model.config.open_set_score,
        branch_logits=predictions.branch_logits,
    )


def _refuse_ignored_options(data_args: DataArguments) -> None:
    """Options the evaluation shares with training but would not use: refused rather than silently ignored."""
    if training_only := changed_options(data_args, ("augmentation", "crop_scale_min")):
        raise ValueError(
            f"{', '.join('--' + n for n in training_only)}: training augmentation; evaluation never uses it."
        )
    if not data_args.face_crop and (face := changed_options(data_args, ("face_margin", "face_min_score"))):
        raise ValueError(f"{', '.join('--' + n for n in face)} apply with --face_crop true only.")


def cli() -> None:
    """The `hesp-evaluate` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
