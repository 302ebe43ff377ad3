"""Command-line arguments of the training and evaluation scripts, as `HfArgumentParser` dataclasses."""

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

import torch
from transformers import TrainingArguments

from ..calibration import check_level
from ..data.dataset import BadClipPolicy, TruncatedClipPolicy
from ..data.presets import PRESETS
from ..modeling.configuration_hesp import HESPConfig
from ..training.sampler import TrainSampling


# The HESPConfig fields of the loss that `--loss_weights` may set: the term weights, the margin and the temperatures.
LOSS_SETTINGS = tuple(
    name
    for name in HESPConfig.__annotations__
    if name.endswith(("_weight", "_margin", "_temperature")) and name != "probability_temperature"  # fitted, not set
)

# The choices of the model settings are HESPConfig's own (one source: its annotations).
CONFIG_TYPES = HESPConfig.__annotations__

# ModelArguments fields that are HESPConfig fields of the same name.
CONFIG_OPTIONS = (
    "n_ctx", "temporal_pooling", "visual_prompt_location", "freeze_vision_tower", "use_visual_prompt",
    "use_reciprocal_points", "open_set_score", "inference_logits", "reciprocal_distance",
)  # fmt: skip

# TrainingArguments flags of the optimiser and scheduler HESP replaces (SGD with epoch milestones): refused when set.
TRAINER_OPTIMISER_FLAGS = (
    "optim", "optim_args", "lr_scheduler_type", "lr_scheduler_kwargs", "adam_beta1", "adam_beta2", "adam_epsilon",
    "label_smoothing_factor",
)  # fmt: skip


@dataclass
class ModelArguments:
    clip_model: str = field(
        metadata={"help": "HF CLIP checkpoint: a Hub id (openai/clip-vit-base-patch32) or a folder."}
    )
    num_frames: int = field(default=8, metadata={"help": "Frames per clip (segment sampling)."})
    recipe: Literal["hesp-hf", "paper"] = field(
        default="hesp-hf",
        metadata={
            "help": "Defaults of the fields below left unset: hesp-hf (recommended: 4 context vectors, RPL's distance "
            "for the reciprocal branch, class-stratified batches) or paper (16 context vectors, ARPL's distance "
            "d_l2 - d_dot, plain shuffle: the published method, to reproduce its numbers). A field given explicitly "
            "always wins."
        },
    )
    n_ctx: int | None = field(
        default=None, metadata={"help": "Learnable context vectors per class prompt (hesp-hf recipe 4, paper 16)."}
    )
    reciprocal_distance: CONFIG_TYPES["reciprocal_distance"] | None = field(
        default=None,
        metadata={"help": "Reciprocal-point logits: l2 (RPL, hesp-hf recipe) or arpl (d_l2 - d_dot, paper recipe)."},
    )
    train_sampling: TrainSampling | None = field(
        default=None,
        metadata={
            "help": "class_stratified (every batch holds the classes in training-set proportion; hesp-hf recipe) "
            "or random (plain shuffle; paper recipe)."
        },
    )
    temporal_pooling: CONFIG_TYPES["temporal_pooling"] = field(
        default="mean", metadata={"help": "mean (the paper's TGP) or attention."}
    )
    visual_prompt_location: CONFIG_TYPES["visual_prompt_location"] = field(
        default="dataset", metadata={"help": "dataset (one saliency location, free at inference) or per_frame."}
    )
    visual_prompt_estimation_clips: int = field(
        default=64,
        metadata={"help": "Training clips whose mean CLIP saliency places the visual prompt (dataset mode)."},
    )
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Keep the CLIP vision tower frozen."})
    use_visual_prompt: bool | None = field(
        default=None,
        metadata={
            "help": "The paper's pixel-space visual prompt (paper recipe: true; hesp-hf recipe: false, it derailed "
            "training on some known lists, docs/open-set-quality.md)."
        },
    )
    visual_prompt_bound: float = field(
        default=0.0,
        metadata={
            "help": "> 0: the largest change the visual prompt makes to a [0, 1] pixel (bound * tanh(delta / bound)); "
            "0: unbounded (the paper's)."
        },
    )
    visual_prompt_lr_scale: float = field(
        default=1.0, metadata={"help": "The visual prompt's learning rate as a multiple of --learning_rate."}
    )
    use_reciprocal_points: bool = field(
        default=True, metadata={"help": "Ablation: false drops the negative visual prompts (CLIP logits alone)."}
    )
    milestones: list[int] = field(
        default_factory=lambda: [30, 60, 90],
        metadata={"help": "Epochs at which the learning rate is multiplied by gamma (space-separated: 30 60 90)."},
    )
    gamma: float = field(default=0.1, metadata={"help": "Learning-rate factor at each milestone."})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum."})
    pixel_prompt_step: float = field(
        default=0.0,
        metadata={"help": "> 0: the released code's normalised-gradient step (it used 50) for the pixel prompts."},
    )
    open_set_score: CONFIG_TYPES["open_set_score"] = field(
        default="max_logit",
        metadata={"help": "Known-ness score: max_logit (as published results) or max_softmax."},
    )
    inference_logits: CONFIG_TYPES["inference_logits"] | None = field(
        default=None,
        metadata={
            "help": "Logits to predict and score with: prototypes (hesp-hf recipe: cosine of the trained video "
            "embedding with each class's mean training embedding, fitted after training), ensemble (paper recipe: "
            "CLIP and reciprocal branches averaged) or clip (the CLIP branch alone). Training is the same for all."
        },
    )
    known_acceptance: float = field(
        default=0.95,
        metadata={
            "help": "Split conformal level of the unknown threshold: a new clip of a known expression (from the "
            "validation clips' distribution) is accepted with at least this probability (docs/calibration.md)."
        },
    )
    keep_share: float | None = field(
        default=None, metadata={"help": "Deprecated name of --known_acceptance (kept for older command lines)."}
    )
    loss_weights: list[str] | None = field(
        default=None,
        metadata={
            "help": "HESPConfig loss settings to override, as name=value items: known_contrastive_weight=0 "
            f"negative_clip_weight=0.5 (any of {', '.join(LOSS_SETTINGS)})."
        },
    )

    def __post_init__(self) -> None:
        # Python callers may pass any sequence or a comma string (as `run_arguments.json` of earlier versions holds);
        # the fields hold lists whatever came in.
        self.milestones = number_list(self.milestones, int, "milestones")
        if self.keep_share is not None:  # the older name: it sets the level, as it did the share
            warnings.warn("--keep_share is deprecated: pass --known_acceptance.", FutureWarning, stacklevel=2)
            self.known_acceptance, self.keep_share = self.keep_share, None
        check_level(self.known_acceptance, name="--known_acceptance")  # here, not after training
        # Parsed once: the settings are kept, and the field holds their canonical `name=value` items (what
        # run_arguments.json records and a resumed run reads back).
        self._loss_settings = loss_settings(self.loss_weights)
        self.loss_weights = [f"{name}={value!r}" for name, value in self._loss_settings.items()] or None
        check_choices(self)  # the recipe's name first: the fields it leaves unset are filled from it
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        check_choices(self)
        if self.visual_prompt_bound < 0:
            raise ValueError(
                f"--visual_prompt_bound must be >= 0 (a change to [0, 1] pixels; 0: unbounded), got "
                f"{self.visual_prompt_bound}."
            )
        if not self.visual_prompt_lr_scale > 0:
            raise ValueError(f"--visual_prompt_lr_scale must be > 0, got {self.visual_prompt_lr_scale}.")

    def loss_overrides(self) -> dict[str, float]:
        """The HESPConfig loss fields these options set: the recipe's (`RECIPE_LOSS_SETTINGS`), then `loss_weights`
        (parsed when the options were made) over them."""
        return RECIPE_LOSS_SETTINGS[self.recipe] | self._loss_settings

    def config_fields(self) -> dict[str, object]:
        """The HESPConfig fields these options set, loss settings included (`num_frames` aside: the model and its
        processor take it together, from `model_and_processor_from_clip`'s own argument)."""
        fields = {name: getattr(self, name) for name in CONFIG_OPTIONS} | self.loss_overrides()
        fields["visual_prompt_bound"] = self.visual_prompt_bound or None  # 0 on the command line: unbounded
        if self.inference_logits == "prototypes":  # fitted after training; until then the ensemble predicts
            fields["inference_logits"] = "ensemble"
        return fields

    def recipe_overrides(self) -> dict[str, object]:
        """The recipe-owned fields (loss settings included) whose value differs from what `recipe` sets (given
        explicitly)."""
        fields = {
            name: getattr(self, name) for name, value in RECIPES[self.recipe].items() if getattr(self, name) != value
        }
        recipe_losses = RECIPE_LOSS_SETTINGS[self.recipe]
        return fields | {
            name: value
            for name, value in self._loss_settings.items()
            if recipe_losses.get(name, getattr(HESPConfig, name)) != value  # HESPConfig's default where no recipe's
        }


# What each recipe sets when the flag is not given (see docs/open-set-quality.md, "Recipes"). The two differ only where the paper's
# form measurably fails on frozen CLIP features; everything else is the paper's in both.
RECIPES: dict[str, dict[str, object]] = {
    "hesp-hf": {
        "n_ctx": 4,
        "reciprocal_distance": "l2",
        "train_sampling": "class_stratified",
        "inference_logits": "prototypes",
        "use_visual_prompt": False,
    },
    "paper": {
        "n_ctx": 16,
        "reciprocal_distance": "arpl",
        "train_sampling": "random",
        "inference_logits": "ensemble",
        "use_visual_prompt": True,
    },
}


# Loss settings each recipe sets under `--loss_weights` (an item given there wins). hesp-hf weights the supervised
# contrastive term 3x: it shapes the video embedding that the prototype head reads, and at 3x the head beat its 1x on
# every known list it was chosen on, AUROC and OSCR (docs/open-set-quality.md, "Training the embedding for the
# prototype head"); the paper weights the five terms alike.
RECIPE_LOSS_SETTINGS: dict[str, dict[str, float]] = {
    "hesp-hf": {"known_contrastive_weight": 3.0},
    "paper": {},
}


@dataclass
class DataArguments:
    dataset: Literal[(*PRESETS, "custom")] | None = field(
        default=None,
        metadata={
            "help": "A preset (its class list and label numbering) or custom (with --class_names), for annotation "
            "files; not needed with --dataset_name (a preset there gives the class order and released lists)."
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A `datasets` dataset: a Hub id, a save_to_disk folder, or a builder (videofolder, parquet, csv, "
            "json) with --data_dir or --data_files. From Python also a Dataset / DatasetDict object."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    data_dir: str | None = field(default=None, metadata={"help": "--dataset_name builder: the data folder."})
    data_files: list[str] | None = field(
        default=None, metadata={"help": "--dataset_name builder: data files (split=pattern items or plain paths)."}
    )
    train_split_name: str = field(default="train", metadata={"help": "--dataset_name: the training split."})
    validation_split_name: str | None = field(
        default=None,
        metadata={
            "help": "--dataset_name: the validation split (default: 'validation' when there is one, else a seeded "
            "--validation_fraction of the training split)."
        },
    )
    test_split_name: str = field(default="test", metadata={"help": "--dataset_name: the test split."})
    video_column_name: str = field(
        default="video", metadata={"help": "--dataset_name: the column of videos (a Video feature, paths or bytes)."}
    )
    label_column_name: str = field(
        default="label", metadata={"help": "--dataset_name: the column of labels (ClassLabel or class-name strings)."}
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "--dataset_name: stream the splits (IterableDataset) instead of caching them on disk."},
    )
    data_root: str | None = field(default=None, metadata={"help": "Dataset root; clip paths resolve against it."})
    train_annotation: str | None = field(
        default=None,
        metadata={"help": "List file, CSV or class-folder root (default: the preset's file under data_root)."},
    )
    test_annotation: str | None = field(default=None, metadata={"help": "As train_annotation, for the test list."})
    fold: int | None = field(default=None, metadata={"help": "Fold of datasets with folds (DFEW: 1-5)."})
    split_index: int | None = field(default=None, metadata={"help": "Released open-set known-class list, 0-19."})
    known_labels: list[str] | None = field(
        default=None, metadata={"help": "Known classes by name (space- or comma-separated)."}
    )
    class_names: list[str] | None = field(
        default=None, metadata={"help": "custom dataset: all class names in index order (space- or comma-separated)."}
    )
    label_base: int | None = field(
        default=None, metadata={"help": "Index of the first class in the annotation files."}
    )
    validation_fraction: float = field(default=0.1, metadata={"help": "Known training clips held out for validation."})
    validation_unknown_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Opt-in, leaks the unknown classes into selection: share of the training list's unknown-class clips "
            "(unused otherwise) added to validation, so that model selection can use OSCR + AUROC. 0 (the protocol): "
            "selection and calibration see known classes only, selection on validation accuracy."
        },
    )
    allow_empty_known_classes: bool = field(
        default=False,
        metadata={"help": "Train even when a known class has no training clip (refused by default)."},
    )
    on_bad_clip: BadClipPolicy = field(
        default="raise",
        metadata={"help": "raise on a clip that fails to decode, or skip it (counted per split in metrics.json)."},
    )
    on_truncated_clip: TruncatedClipPolicy = field(
        default="warn",
        metadata={
            "help": "A file that decodes only partly: warn (use the part that exists; counted), raise, or skip "
            "(counted)."
        },
    )
    face_crop: bool = field(
        default=False,
        metadata={
            "help": "Crop every clip to its face first (raw footage, not pre-cropped datasets); needs "
            "`pip install hesp-hf[face]`. Saved in the processor, so the trained pipeline crops too."
        },
    )
    face_margin: float = field(default=0.25, metadata={"help": "Margin around the face box, share of its side."})
    face_min_score: float = field(
        default=0.75,
        metadata={"help": "Detector score a face needs (0.75: measured on real faces; drawn faces: lower)."},
    )
    augmentation: Literal["flip_crop", "flip", "none"] = field(
        default="flip_crop",
        metadata={"help": "Training augmentation, one draw per clip: flip_crop (the paper's), flip, or none."},
    )
    crop_scale_min: float = field(default=0.08, metadata={"help": "Smallest area share of the random resized crop."})

    def __post_init__(self) -> None:
        # Lists of names: `--known_labels a b c`, `--known_labels a,b,c` (as before) and Python lists all mean the same.
        self.known_labels = name_list(self.known_labels)
        self.class_names = name_list(self.class_names)
        # A datasets object from Python travels beside the fields, which stay plain values (run_arguments.json).
        self.dataset_object = None
        if self.dataset_name is not None and not isinstance(self.dataset_name, str):
            self.dataset_object, self.dataset_name = self.dataset_name, None
        if self.dataset is None and self.dataset_name is None and self.dataset_object is None:
            raise ValueError(
                "Give --dataset_name (a datasets dataset: Hub id, folder or builder), or --dataset (a preset or "
                "custom) with its annotation files."
            )
        if isinstance(self.data_files, str):
            self.data_files = [self.data_files]
        check_choices(self)

    @property
    def uses_datasets(self) -> bool:
        """Whether the clips come from a `datasets` dataset (`--dataset_name`) rather than annotation files."""
        return self.dataset_name is not None or self.dataset_object is not None


def check_choices(arguments: object) -> None:
    """Every `Literal` field of an argument dataclass holds one of its choices: the command line checks them itself,
    Python callers (`hesp_hf.train(...)`) and older `run_arguments.json` files do not."""
    hints = get_type_hints(type(arguments))
    for item in fields(arguments):
        choices = literal_choices(hints[item.name])
        value = getattr(arguments, item.name)
        if choices and value is not None and value not in choices:
            raise ValueError(f"--{item.name} must be one of {', '.join(map(str, choices))}, got {value!r}.")


def literal_choices(annotation: object) -> tuple:
    """The choices of a `Literal[...]` annotation, also inside `X | None`; empty for any other type."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) in (Union, UnionType):
        return tuple(choice for member in get_args(annotation) for choice in literal_choices(member))
    return ()


def changed_options(arguments: object, names: Sequence[str], defaults_of: type | None = None) -> list[str]:
    """The fields among `names` whose value differs from its default in `defaults_of` (the arguments' own class by
    default); enum members compare by value, and None and an empty value count as the same."""
    defaults = {item.name: item.default for item in fields(defaults_of or type(arguments))}
    changed = []
    for name in names:
        value = getattr(arguments, name)
        value = getattr(value, "value", value)
        if value != defaults[name] and (value or defaults[name]):
            changed.append(name)
    return changed


def comma_items(value: object) -> list[str]:
    """The items of a list, a comma-separated string or a mix (`["a,b", "c"]`, `["8,10"]`), stripped, empties
    dropped: older `run_arguments.json` files and Python callers pass comma strings where the command line gives
    separate values."""
    entries = [value] if isinstance(value, (str, int, float)) else list(value or [])
    return [part.strip() for entry in entries for part in str(entry).split(",") if part.strip()]


def name_list(value: str | Sequence[str] | None) -> list[str] | None:
    """Class names from a list, a comma-separated string or a mix; None when empty."""
    return comma_items(value) or None


def number_list(value: object, kind: type, name: str) -> list:
    """A list of `kind` numbers from a sequence, a comma string or a mix (`["8,10"]`), for the field `name`."""
    try:
        return [kind(part) for part in comma_items(value)]
    except ValueError:
        raise ValueError(f"--{name} takes {kind.__name__} values (space-separated), got {value!r}.") from None


def loss_settings(value: Mapping[str, float] | str | Sequence[str] | None) -> dict[str, float]:
    """`--loss_weights` as `{HESPConfig field: value}`, from `name=value` items (a list, or one comma string as
    earlier versions took) or a mapping; an unknown name or a value that is not a number raises naming the item."""
    if isinstance(value, Mapping):
        value = [f"{name}={number}" for name, number in value.items()]
    settings: dict[str, float] = {}
    for item in comma_items(value):
        name, _, number = (piece.strip() for piece in item.partition("="))
        if name not in LOSS_SETTINGS:
            raise ValueError(
                f"--loss_weights: '{item}' does not name a loss setting; name=value items of {', '.join(LOSS_SETTINGS)}."
            )
        try:
            settings[name] = float(number)
        except ValueError:
            raise ValueError(f"--loss_weights: '{item}' needs a number after '='.") from None
    return settings


@dataclass
class HESPTrainingArguments(TrainingArguments):
    """TrainingArguments with the paper's defaults (SGD lr 0.01, wd 1e-4, 100 epochs, batch 64) and per-epoch
    evaluation, checkpointing and best-model selection on the validation subset."""

    learning_rate: float = field(default=0.01, metadata={"help": "SGD learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay."})
    num_train_epochs: float = field(default=100, metadata={"help": "Epochs."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Clips per device and step."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Clips per device in evaluation."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate on the validation subset."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Keep the best validation checkpoint."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: clips decode on the fly."})
    report_to: str = field(default="none", metadata={"help": "tensorboard, wandb, ... or none."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a run already in --output_dir (refused otherwise)."}
    )
    ddp_find_unused_parameters: bool = field(default=False, metadata={"help": "Every trainable parameter is used."})
    max_grad_norm: float = field(
        default=0.0,
        metadata={
            "help": "Gradient clipping norm; 0 (the paper's recipe) disables it. Trainer's usual 1.0 starves the "
            "prompts: the negative visual prompt images dominate the global norm."
        },
    )
    report_baselines: bool = field(
        default=True,
        metadata={
            "help": "Score the test set with the training-free baselines on the frozen CLIP too (linear probe, "
            "energy, class prototypes, kNN, Mahalanobis: hesp_hf.evaluation.baselines): metrics.json and the card "
            "put the model beside the strongest of them."
        },
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"],
        metadata={
            "help": "The Trainer's input keys holding labels: always 'labels' for HESP (class names: --class_names)."
        },
    )

    def __post_init__(self) -> None:
        # Remembered before TrainingArguments fills them in (it sets metric_for_best_model="loss" when unset).
        self.metric_given = self.metric_for_best_model is not None
        if self.label_names != ["labels"]:
            raise ValueError(
                f"--label_names {self.label_names}: that is the Trainer's list of label keys, always 'labels' for HESP. "
                "Name the classes of a custom dataset with --class_names."
            )
        if self.dataloader_pin_memory and not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns, per worker
        if self.bf16 and not self.use_cpu and not _has_accelerator():
            # The stock check refuses bf16 without a GPU unless told to use the CPU; on a CPU-only machine that is
            # the only device, and CPU bf16 autocast works (fast where the CPU has native bf16).
            self.use_cpu = True
        super().__post_init__()
        changed = [
            f"--{name} {getattr(getattr(self, name), 'value', getattr(self, name))}"
            for name in changed_options(self, TRAINER_OPTIMISER_FLAGS, TrainingArguments)
        ]
        if changed:
            raise ValueError(
                f"{', '.join(changed)}: HESP trains with the paper's optimiser, SGD with momentum (--momentum) and "
                "learning-rate steps at epoch milestones (--milestones, --gamma, optional --warmup_steps), and its "
                "own open-set loss; the Trainer's optimiser, scheduler and label-smoothing flags would be ignored, so "
                "they are refused."
            )


def _has_accelerator() -> bool:
    """A GPU or other accelerator PyTorch can train on."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def training_arguments(**options: object) -> tuple[ModelArguments, DataArguments, HESPTrainingArguments]:
    """The three argument dataclasses of a training run from keyword options, each routed to the dataclass that has
    a field of its name; a name none of them has raises `TypeError` with the closest ones."""
    import difflib

    groups = (ModelArguments, DataArguments, HESPTrainingArguments)
    names = [{f.name for f in fields(group) if f.init} for group in groups]
    unknown = sorted(set(options) - set().union(*names))
    if unknown:
        every = sorted(set().union(*names))
        hints = {name: difflib.get_close_matches(name, every, n=2) for name in unknown}
        raise TypeError(
            "Unknown training options: "
            + ", ".join(
                f"{name} (did you mean {' or '.join(close)}?)" if close else name for name, close in hints.items()
            )
            + ". They are the fields of ModelArguments, DataArguments and HESPTrainingArguments (`scripts/train.py --help`)."
        )
    # A datasets dataset (dataset_name) needs no preset.
    given = set(options) | ({"dataset"} if "dataset_name" in options else set())
    missing = [name for name in ("dataset", "output_dir") if name not in given]
    if missing:
        raise TypeError(f"Training needs {' and '.join(missing)} (or dataset_name for a datasets dataset).")
    built = []
    for group, group_names in zip(groups, names, strict=True):
        built.append(group(**{name: value for name, value in options.items() if name in group_names}))
    return tuple(built)
