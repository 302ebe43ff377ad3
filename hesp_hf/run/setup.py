"""What a training run is built from: its open-set split, the model and processor, the data transforms, the clip
log and the visual prompt's place."""

import json
import logging
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from transformers import TrainingArguments

from ..data import (
    ClipAugmentation,
    ClipTransform,
    OpenSetSplit,
    clip_dataset,
    collate_clips,
    load_open_set_split,
    read_annotation,
)
from ..data.dataset import read_clip_log
from ..data.hf_datasets import DatasetSource, dataset_open_set_split, dataset_test_split
from ..data.presets import get_preset
from ..data.protocol import test_only_split
from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification
from ..modeling.video_processing_hesp import HESPVideoProcessor
from ..pairing import model_and_processor_from_clip
from .arguments import DataArguments, ModelArguments, name_list


logger = logging.getLogger(__name__)

CLIP_LOG_NAME = "clip_report.tsv"
FACE_CACHE_NAME = "face_tracks"


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


def dataset_source(data_args: DataArguments) -> DatasetSource | None:
    """The `datasets` source of `--dataset_name` and its options; None when the clips come from annotation files."""
    if not data_args.uses_datasets:
        return None
    return DatasetSource(
        name=data_args.dataset_name,
        dataset=data_args.dataset_object,
        config_name=data_args.dataset_config_name,
        data_dir=data_args.data_dir,
        data_files=tuple(data_args.data_files) if data_args.data_files else None,
        streaming=data_args.streaming,
        video_column=data_args.video_column_name,
        label_column=data_args.label_column_name,
        train_split=data_args.train_split_name,
        validation_split=data_args.validation_split_name,
        test_split=data_args.test_split_name,
        data_root=data_args.data_root,
    )


def load_split(data_args: DataArguments, seed: int) -> OpenSetSplit:
    source = dataset_source(data_args)
    if source is not None:
        return dataset_open_set_split(
            source,
            split_index=data_args.split_index,
            known_labels=data_args.known_labels,
            class_names=data_args.class_names,
            preset=data_args.dataset,
            validation_fraction=data_args.validation_fraction,
            seed=seed,
            validation_unknown_fraction=data_args.validation_unknown_fraction,
            allow_empty_known_classes=data_args.allow_empty_known_classes,
        )
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
    dataset's class list from `--class_names` or, when not given, the `run_arguments.json` the training wrote.
    With `--dataset_name`, the source's test split."""
    source = dataset_source(data_args)
    if source is not None:
        return dataset_test_split(source, known_labels, data_args.class_names, data_args.dataset)
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


def build_model_and_processor(
    model_args: ModelArguments, data_args: DataArguments, known_labels: list[str]
) -> tuple[HESPForOpenSetVideoClassification, HESPVideoProcessor]:
    """The untrained model and its processor: the CLIP of `--clip_model`, the known classes, the model options as
    config fields and `num_frames` given to both once (`model_and_processor_from_clip`)."""
    return model_and_processor_from_clip(
        model_args.clip_model,
        known_labels,
        num_frames=model_args.num_frames,
        processor_kwargs=face_settings(data_args),
        **model_args.config_fields(),
    )


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
    loader = DataLoader(clip_dataset(records, transform), batch_size=8, collate_fn=collate_clips)
    batches = (batch["pixel_values_videos"] for batch in loader)  # a streamed set is read in order, not by index
    batches = (batch for batch in batches if len(batch))  # a batch of skipped clips is empty
    model.eval()
    model.config.visual_prompt_center = model.estimate_visual_prompt_location(batches)
    model.train()


def choose_selection_metric(training_args: TrainingArguments, has_unknown_validation: bool) -> None:
    """Best-model selection: `--metric_for_best_model` when given; otherwise OSCR + AUROC on the validation subset
    (accuracy when it holds no unknown clip), higher is better."""
    if getattr(training_args, "metric_given", True):
        return
    training_args.metric_for_best_model = "oscr_plus_auroc" if has_unknown_validation else "accuracy"
    training_args.greater_is_better = True
    if not has_unknown_validation:
        logger.info("Validation holds known classes only (the protocol): model selection uses validation accuracy.")
