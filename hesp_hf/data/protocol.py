"""The paper's open-set protocol: known classes, re-indexed labels, and the train / validation / test subsets.

Known labels are re-indexed `0..K-1` in the order of their original class index, and the class names handed to the
model follow that same order (the released code pairs them alphabetically: not here). Training sees known clips of
the training list only; a stratified validation subset is held out from it for model selection and threshold
calibration; the test set is the known clips of the test list plus every unknown-class clip, labelled `unknown_label_id`.
"""

import logging
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from ..modeling.modeling_hesp import UNKNOWN_LABEL_ID
from .annotations import ClipRecord
from .presets import DatasetPreset


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenSetSplit:
    """One open-set setting of a dataset. `known_classes`: original class indices, sorted; `known_labels`: their
    names, in the model's label order; `unknown_classes`: every other class. Records carry re-indexed labels
    (`0..K-1`, `unknown_label_id` for unknown clips)."""

    preset: DatasetPreset
    known_classes: tuple[int, ...]
    train: tuple[ClipRecord, ...]
    validation: tuple[ClipRecord, ...]
    test: tuple[ClipRecord, ...]
    unknown_label_id: int = UNKNOWN_LABEL_ID
    validation_from: str = ""  # how validation was made, when not the seeded share of the training list

    @property
    def known_labels(self) -> list[str]:
        return [self.preset.class_names[i] for i in self.known_classes]

    @property
    def unknown_classes(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.preset.num_classes) if i not in self.known_classes)

    def summary(self) -> str:
        """A table of classes and clip counts per subset, as in the paper's setup tables."""
        counts = {name: Counter(r.label for r in getattr(self, name)) for name in ("train", "validation", "test")}
        rows = [
            f"{self.preset.name}: {len(self.known_classes)} known / {len(self.unknown_classes)} unknown classes "
            f"(openness {len(self.unknown_classes) / self.preset.num_classes:.2f})",
            f"{'class':<16} {'status':<8} {'label':>5} {'train':>7} {'val':>7} {'test':>7}",
        ]
        for label, original in enumerate(self.known_classes):
            name = self.preset.class_names[original]
            c = [counts[s][label] for s in ("train", "validation", "test")]
            rows.append(f"{name:<16} {'known':<8} {label:>5} {c[0]:>7} {c[1]:>7} {c[2]:>7}")
        unknown_val = Counter(r.original_label for r in self.validation if r.label == self.unknown_label_id)
        unknown_test = Counter(r.original_label for r in self.test if r.label == self.unknown_label_id)
        for original in self.unknown_classes:
            name = self.preset.class_names[original]
            rows.append(
                f"{name:<16} {'unknown':<8} {self.unknown_label_id:>5} {0:>7} {unknown_val[original]:>7} "
                f"{unknown_test[original]:>7}"
            )
        rows.append(
            f"{'total':<16} {'':<8} {'':>5} {len(self.train):>7} {len(self.validation):>7} {len(self.test):>7}"
            f"  (test: {sum(r.label != self.unknown_label_id for r in self.test)} known + "
            f"{sum(r.label == self.unknown_label_id for r in self.test)} unknown)"
        )
        return "\n".join(rows)


def known_classes_for(
    preset: DatasetPreset, split_index: int | None, known_labels: list[str] | None
) -> tuple[int, ...]:
    """Original indices of the known classes: the preset's released list `split_index` (0..19, file order), or the
    named `known_labels`; sorted, which is the label order."""
    if (split_index is None) == (known_labels is None):
        raise ValueError("Give exactly one of split_index (a released open-set list) or known_labels (class names).")
    if split_index is not None:
        if not preset.open_set_splits:
            raise ValueError(f"'{preset.name}' has no released open-set lists: pass known_labels explicitly.")
        if not 0 <= split_index < len(preset.open_set_splits):
            raise ValueError(
                f"split_index must lie in 0..{len(preset.open_set_splits) - 1} for '{preset.name}', got {split_index}."
            )
        return tuple(sorted(preset.open_set_splits[split_index]))
    lowered = {name.lower(): i for i, name in enumerate(preset.class_names)}
    unknown = [name for name in known_labels if name.lower() not in lowered]
    if unknown:
        raise ValueError(f"known_labels {unknown} are not classes of '{preset.name}': {list(preset.class_names)}.")
    indices = sorted({lowered[name.lower()] for name in known_labels})
    if len(indices) == preset.num_classes:
        raise ValueError("known_labels names every class: an open-set split needs at least one unknown class.")
    return tuple(indices)


def stratified_holdout(
    records: list[ClipRecord], fraction: float, seed: int
) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """Split `records` into (kept, held out) with `fraction` of every class held out (at least one clip of each
    class with two or more), reproducibly for a seed."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {fraction}.")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for position, record in enumerate(records):
        by_class.setdefault(record.label, []).append(position)
    held = set()
    for label in sorted(by_class):
        positions = by_class[label]
        count = int(round(fraction * len(positions)))
        if fraction > 0 and len(positions) >= 2:
            count = min(max(count, 1), len(positions) - 1)
        held.update(rng.permutation(positions)[:count].tolist())
    kept = [r for i, r in enumerate(records) if i not in held]
    return kept, [r for i, r in enumerate(records) if i in held]


def reindex(record: ClipRecord, label: int) -> ClipRecord:
    """`record` with its label re-indexed for a split; `original_label` keeps the preset index."""
    return replace(record, label=label, original_label=record.label)


def make_open_set_split(
    preset: DatasetPreset,
    train_records: list[ClipRecord],
    test_records: list[ClipRecord],
    split_index: int | None = None,
    known_labels: list[str] | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    unknown_label_id: int = UNKNOWN_LABEL_ID,
    validation_unknown_fraction: float = 0.0,
    allow_empty_known_classes: bool = False,
) -> OpenSetSplit:
    """Apply the open-set protocol to a training and a test list (records labelled in preset order).

    A known class without a single training clip is refused (its prompt would never train, yet the model would claim
    to know it), unless `allow_empty_known_classes`.

    `validation_unknown_fraction` > 0 also puts that share of the *training list's* unknown-class clips (otherwise
    unused) into the validation subset, labelled `unknown_label_id`, so that model selection can use AUROC and OSCR
    without ever looking at the test list. Threshold calibration uses the known validation clips only.
    """
    known = known_classes_for(preset, split_index, known_labels)
    relabel = {original: label for label, original in enumerate(known)}
    train_known = [reindex(r, relabel[r.label]) for r in train_records if r.label in relabel]
    if not train_known:
        raise ValueError(
            f"The training list holds no clip of the known classes {[preset.class_names[i] for i in known]}."
        )
    present = {r.original_label for r in train_known}
    empty = [preset.class_names[i] for i in known if i not in present]
    if empty and not allow_empty_known_classes:
        sources = sorted({r.source for r in train_records})
        raise ValueError(
            f"Known class(es) {empty} have no clip in the training list {', '.join(sources)}: fix the annotation or "
            "the known classes, or pass allow_empty_known_classes=True (--allow_empty_known_classes) to train anyway."
        )
    if empty:
        logger.warning("Known class(es) %s have no training clip; their prompts will not train.", empty)
    train, validation = stratified_holdout(train_known, validation_fraction, seed)
    if validation_unknown_fraction > 0:
        train_unknown = [r for r in train_records if r.label not in relabel]  # still in preset order: stratified
        _, held_unknown = stratified_holdout(train_unknown, validation_unknown_fraction, seed)
        validation += [reindex(r, unknown_label_id) for r in held_unknown]
    test = [reindex(r, relabel.get(r.label, unknown_label_id)) for r in test_records]
    split = OpenSetSplit(preset, known, tuple(train), tuple(validation), tuple(test), unknown_label_id)
    logger.info("Open-set split:\n%s", split.summary())
    return split


def test_only_split(
    preset: DatasetPreset,
    test_records: list[ClipRecord],
    known_labels: list[str],
    unknown_label_id: int = UNKNOWN_LABEL_ID,
) -> OpenSetSplit:
    """The open-set test set of a trained model: its `known_labels` (label order, as the checkpoint stores them)
    labelled `0..K-1`, every other class `unknown_label_id`; no training list needed."""
    known = known_classes_for(preset, None, known_labels)
    names = [preset.class_names[i] for i in known]
    if [name.lower() for name in names] != [name.lower() for name in known_labels]:
        raise ValueError(
            f"The model's known classes {known_labels} are not in the order the protocol gives them ({names}): "
            "it was not trained on this dataset's class list."
        )
    relabel = {original: label for label, original in enumerate(known)}
    test = [reindex(r, relabel.get(r.label, unknown_label_id)) for r in test_records]
    return OpenSetSplit(preset, known, (), (), tuple(test), unknown_label_id)
