"""What this package knows about the datasets users bring: class names in label order, label numbering, folds, and
the paper's 20 open-set known-class lists (HESP, ACM MM 2024, Sec. 4.1, and the lists released with its code)."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetPreset:
    """A dataset's classes in label order and how its annotation files number them.

    `label_base`: the index of the first class in the annotation files (DFEW's official ids are 1..7, with 0 for
    clips that are not single-labelled, which are `excluded_labels`). `open_set_splits`: the known-class lists of the
    released HESP protocol, as original class indices (0-based in `class_names` order), in the released file order.
    """

    name: str
    class_names: tuple[str, ...]
    label_base: int = 0
    excluded_labels: tuple[int, ...] = ()
    folds: tuple[int, ...] = ()
    open_set_splits: tuple[tuple[int, ...], ...] = field(default=())
    annotation_files: tuple[str, str] | None = None  # (train, test) under the data root; `{fold}` is filled in

    def default_annotations(self, fold: int | None = None) -> tuple[str, str]:
        """The preset's usual (train, test) annotation paths relative to the data root, for `fold` if it has folds."""
        if self.annotation_files is None:
            raise ValueError(f"'{self.name}' has no default annotation files: pass the train and test annotations.")
        if self.folds and fold not in self.folds:
            raise ValueError(f"'{self.name}' needs a fold in {list(self.folds)}, got {fold}.")
        return tuple(name.format(fold=fold) for name in self.annotation_files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# The released HESP lists (`split.py`, `splits_2024`): per dataset, 4 openness levels x 5 random known-class lists.
AFEW_SPLITS = (
    (5, 3), (6, 3), (1, 5), (1, 2), (0, 4),
    (3, 1, 2), (0, 4, 1), (2, 3, 5), (6, 3, 4), (4, 6, 5),
    (6, 0, 3, 5), (2, 1, 6, 0), (5, 3, 4, 1), (0, 2, 3, 1), (3, 4, 0, 2),
    (2, 5, 3, 6, 1), (3, 0, 4, 6, 1), (6, 0, 4, 1, 5), (5, 6, 1, 3, 4), (4, 6, 2, 1, 0),
)  # fmt: skip
MAFW_SPLITS = (
    (10, 5, 6), (1, 5, 3), (1, 10, 2), (6, 2, 4), (2, 8, 9),
    (2, 5, 10, 0, 4), (0, 5, 2, 6, 8), (1, 10, 3, 7, 4), (4, 1, 6, 3, 2), (8, 0, 4, 3, 6),
    (2, 4, 7, 10, 1, 0), (9, 10, 5, 4, 1, 2), (6, 9, 1, 10, 7, 2), (10, 4, 8, 9, 0, 5), (5, 2, 3, 8, 9, 4),
    (4, 2, 5, 8, 1, 9, 6, 3), (2, 9, 6, 1, 0, 8, 3, 4), (5, 4, 8, 0, 10, 3, 6, 1), (0, 7, 6, 9, 2, 4, 5, 1),
    (2, 3, 6, 0, 7, 9, 10, 1),
)  # fmt: skip
DFEW_SPLITS = (
    (6, 1), (5, 4), (4, 0), (3, 1), (1, 5),
    (1, 4, 6), (0, 1, 5), (1, 3, 5), (2, 1, 5), (0, 2, 1),
    (0, 1, 2, 5), (6, 5, 2, 1), (3, 5, 1, 4), (5, 0, 2, 3), (5, 4, 0, 2),
    (2, 4, 0, 3, 6), (3, 5, 1, 0, 2), (0, 6, 5, 4, 3), (4, 0, 2, 5, 6), (4, 0, 1, 5, 6),
)  # fmt: skip

PRESETS: dict[str, DatasetPreset] = {
    "dfew": DatasetPreset(
        name="dfew",
        class_names=("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"),
        label_base=1,
        excluded_labels=(0,),
        folds=(1, 2, 3, 4, 5),
        open_set_splits=DFEW_SPLITS,
        annotation_files=("annotation/set_{fold}_train.txt", "annotation/set_{fold}_test.txt"),  # DFER-CLIP lists
    ),
    "mafw": DatasetPreset(
        name="mafw",
        class_names=(
            "anger",
            "disgust",
            "fear",
            "happiness",
            "neutral",
            "sadness",
            "surprise",
            "contempt",
            "anxiety",
            "helplessness",
            "disappointment",
        ),  # fmt: skip
        label_base=0,
        open_set_splits=MAFW_SPLITS,
        annotation_files=("annotation_text_label/MAFW_train.txt", "annotation_text_label/MAFW_val.txt"),  # HESP's
    ),
    "afew": DatasetPreset(
        name="afew",
        class_names=("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"),
        open_set_splits=AFEW_SPLITS,
        annotation_files=("Train", "Val"),  # class folders
    ),
    # FERV39k has fixed train/test lists and no released open-set lists: pass the known classes explicitly.
    "ferv39k": DatasetPreset(
        name="ferv39k",
        class_names=("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"),
        label_base=1,
        annotation_files=("annotation/FERV39k_train.txt", "annotation/FERV39k_test.txt"),  # DFER-CLIP lists
    ),
}


def get_preset(name: str, class_names: list[str] | None = None, label_base: int | None = None) -> DatasetPreset:
    """The preset `name` (`dfew`, `mafw`, `afew`, `ferv39k`), or `custom` built from `class_names` (index order).

    `label_base` overrides the preset's numbering of labels in annotation files.
    """
    if name == "custom":
        if not class_names:
            raise ValueError(
                "The 'custom' dataset needs its class names in index order (--class_names; label_names in Python)."
            )
        seen: dict[str, str] = {}
        for class_name in class_names:  # annotations match labels to class names without case: they must differ so too
            if class_name.lower() in seen:
                raise ValueError(
                    f"--class_names must be distinct, also ignoring case (labels are matched without case): "
                    f"{seen[class_name.lower()]!r} and {class_name!r} in {list(class_names)}."
                )
            seen[class_name.lower()] = class_name
        return DatasetPreset(name="custom", class_names=tuple(class_names), label_base=label_base or 0)
    if name not in PRESETS:
        raise ValueError(f"Unknown dataset preset '{name}': expected one of {sorted(PRESETS) + ['custom']}.")
    preset = PRESETS[name]
    if class_names is not None and tuple(class_names) != preset.class_names:
        raise ValueError(
            f"--class_names {class_names} differ from the '{name}' preset's classes {list(preset.class_names)}; "
            "use dataset='custom' for another class list."
        )
    if label_base is not None and label_base != preset.label_base:
        preset = DatasetPreset(**{**preset.__dict__, "label_base": label_base})
    return preset
