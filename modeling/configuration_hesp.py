# Copyright 2026 The hesp-hf Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""HESP configuration: a CLIP configuration plus every number of the prompts, the temporal module and the loss.

Paper: "Open-Set Video-based Facial Expression Recognition with Human Expression-sensitive Prompting" (ACM MM 2024).
This file travels inside every checkpoint (remote code): it imports nothing beyond transformers and the standard library.
"""

import json
from typing import Any, ClassVar, Literal

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig
from transformers.utils import CONFIG_NAME, VIDEO_PROCESSOR_NAME, cached_file, logging


logger = logging.get_logger(__name__)

# OpenAI CLIP's pixel statistics; the visual prompt is added before normalisation, so the model needs the std.
CLIP_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

# What `auto_map` holds in every saved config, so that a checkpoint loads with `trust_remote_code=True` through
# each Auto class (`register_for_auto_class` records only one Auto class per registered class).
HESP_AUTO_MAP = {
    "AutoConfig": "configuration_hesp.HESPConfig",
    "AutoModel": "modeling_hesp.HESPForOpenSetVideoClassification",
    "AutoModelForVideoClassification": "modeling_hesp.HESPForOpenSetVideoClassification",
}


@strict
class HESPConfig(CLIPConfig):
    r"""
    Configuration of [`HESPForOpenSetVideoClassification`]: a frozen CLIP (`text_config`, `vision_config`,
    `projection_dim`, as in [`CLIPConfig`]) with learned text prompts, a pixel-space visual prompt, a temporal
    module and reciprocal points.

    Labels: `id2label` lists the `K` known classes in label order and then `unknown_label` (so `num_labels = K + 1`).
    The text prompts are tokenized once, by [`HESPConfig.from_clip_config`], and kept here as token ids, so a saved
    checkpoint loads without a tokenizer.

    Example:

    ```python
    >>> from transformers import AutoTokenizer, CLIPConfig
    >>> from hesp_hf import HESPConfig, HESPForOpenSetVideoClassification

    >>> clip = "openai/clip-vit-base-patch32"
    >>> config = HESPConfig.from_clip_config(
    ...     CLIPConfig.from_pretrained(clip), ["happy", "sad", "neutral"], AutoTokenizer.from_pretrained(clip),
    ...     temporal_pooling="attention",
    ... )
    >>> config.id2label  # {0: "happy", 1: "sad", 2: "neutral", 3: "unknown"}
    >>> model = HESPForOpenSetVideoClassification(config)  # random towers; `from_clip` loads CLIP's weights
    ```

    Args:
        num_frames (`int`, *optional*, defaults to 8):
            Frames sampled per clip by the processor and the pipeline. The model itself takes `T` from its input.
        n_ctx (`int`, *optional*, defaults to 4):
            Learnable context vectors per class in the CoOp prompt `[SOS] ctx_1..ctx_M <class name> . [EOS]`. The
            paper uses 16 (CoOp's default). 4 is hesp-hf's, the length CoCoOp uses (its authors found that CoOp's
            learned contexts overfit the training classes and transfer badly to unseen ones): fewer parameters to
            fit to the known classes, and better unknown detection on the synthetic protocol (hesp-hf's
            docs/open-set-quality.md).
        prompt_init_std (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the context vectors.
        class_token_ids (`list[list[int]]`, *optional*):
            Per known class, the token ids of `class_prompt_template` (with start and end tokens, no padding).
        negative_prompt_token_ids (`list[list[int]]`, *optional*):
            Per known class, the token ids of `negative_prompt_template` ("This video is not {label}.").
        class_prompt_template (`str`, *optional*, defaults to `"{}."`):
            Text after the context vectors; `{}` is the class name.
        negative_prompt_template (`str`, *optional*, defaults to `"This video is not {}."`):
            The fixed negative text prompt of each known class.
        visual_prompt_size (`int`, *optional*):
            Side in pixels of the learnable square visual prompt; defaults to a quarter of the image size
            (56 at 224, the paper's patch).
        visual_prompt_location (`str`, *optional*, defaults to `"dataset"`):
            `"dataset"`: one location (`visual_prompt_center`) for all frames, estimated once from CLIP saliency over
            training clips, free at inference. `"per_frame"`: the location is recomputed for every frame from the
            saliency of that frame (the paper's per-frame mask), at the cost of one more vision-tower pass.
        visual_prompt_center (`list[int]`, *optional*):
            `[row, col]` pixel centre of the visual prompt in `"dataset"` mode; the image centre until estimated.
        image_std (`list[float]`, *optional*):
            Per-channel std of the processor's normalisation (CLIP's by default): the prompt lives in [0, 1] pixel
            space, so it is added as `prompt / std` to normalised pixels.
        temporal_pooling (`str`, *optional*, defaults to `"mean"`):
            `"mean"`: temporal global pooling (the paper's TGP). `"attention"`: expression-sensitive frame weights
            from a learned query and the frames' similarity to the class prompts (starts equal to the mean).
        visual_prompt_bound (`float`, *optional*):
            The largest change the visual prompt makes to a pixel, in [0, 1] pixel units: the prompt is
            `bound * tanh(delta / bound)`, equal to `delta` while small. `None` (default): unbounded, the paper's.
        use_visual_prompt (`bool`, *optional*, defaults to `True`):
            Ablation switch: `False` leaves the frames unprompted (the visual prompt is frozen and unused).
        use_reciprocal_points (`bool`, *optional*, defaults to `True`):
            Ablation switch: `False` drops the negative visual prompts: the logits are the CLIP logits alone, and the
            `L_NE(CLIP)`, `L_NE(CE)` and `L_H` terms are off.
        freeze_vision_tower (`bool`, *optional*, defaults to `True`):
            Keep the CLIP vision tower and `visual_projection` frozen. Small models trained from scratch need `False`.
        freeze_text_tower (`bool`, *optional*, defaults to `True`):
            Keep the CLIP text tower, `text_projection` and `logit_scale` frozen.
        unknown_label (`str`, *optional*, defaults to `"unknown"`):
            Name of the last label, predicted when the known-ness score falls below `unknown_threshold`.
        unknown_threshold (`float`, *optional*):
            Threshold on the known-ness score (`open_set_score` of the `inference_logits`), calibrated on validation
            data. `None` (not calibrated): the `"unknown"` column is the lowest finite value, so it is never the top
            label.
        known_acceptance (`float`, *optional*):
            The level the threshold was calibrated at by split conformal prediction: a new clip of a known class from
            the calibration clips' distribution is accepted with probability at least this. `None`: no guarantee
            (a checkpoint calibrated before hesp-hf saved its calibration scores).
        calibration_scores (`list[float]`, *optional*):
            The known-ness scores of the known calibration clips (sorted; a few hundred floats at most), from which
            `hesp_hf` computes each clip's conformal p-value and re-decides at another level without retraining.
        probability_temperature (`float`, *optional*, defaults to 1.0):
            Temperature dividing the model's output logits (fitted on the known validation clips), so that their
            softmax gives calibrated probabilities wherever they are read (the pipeline, the predictor, the timeline,
            every export); it changes neither the top class nor the known-ness score.
        open_set_score (`str`, *optional*, defaults to `"max_logit"`):
            Known-ness score: `"max_logit"`, the maximum logit (as published HESP results, on the ensemble), or
            `"max_softmax"`, the maximum softmax probability over the known classes (shift-invariant, so it ignores
            an offset common to all logits); `unknown_threshold` is on the same scale (a probability for the latter).
        inference_logits (`str`, *optional*, defaults to `"ensemble"`):
            The `K` known-class logits the model predicts and scores with: `"ensemble"`, the paper's
            `(clip_logits + reciprocal_logits) / 2`; `"clip"`, the CLIP branch (learned text prompts) alone; or
            `"prototypes"`, the cosine of the trained video embedding with each class prototype (the mean embedding
            of the class's training clips, `class_prototypes`, fitted after training) times the logit scale. Training
            is the same (all five loss terms, the hybrid one on the ensemble); `metrics.json` reports every branch.
        prototype_space (`str`, *optional*, defaults to `"trained"`):
            Where the prototype head compares clips with its prototypes: `"trained"`, the trained video embedding, or
            `"frozen"`, the frozen CLIP's frame-mean feature (every frame without the visual prompt, L2-normalised,
            averaged). Fitting keeps the trained space unless the frozen features' prototypes classify the known
            training clips clearly better (leave-one-out), so a training that went wrong falls back to them.
        reciprocal_distance (`str`, *optional*, defaults to `"l2"`):
            The reciprocal-point logits (`reciprocal_logits`, the `L_NE(CE)` and `L_H` terms, the ensemble).
            `"l2"`: RPL's distance (Chen et al., ECCV 2020), `||v - p_k||^2 / D`: a reciprocal point stands for
            everything that is not class `k`, and a clip belongs to `k` the farther it lies from it; the radius margin
            bounds the open space around the points as in ARPL. `"arpl"`: the paper's (and ARPL's, Chen et al.,
            TPAMI 2021) `d_l2 - v.p_k`. ARPL adds the dot product for a feature extractor trained *with* it, which
            learns to put unknown inputs at small norms near the points; HESP's towers are frozen, so nothing moves
            the features, and `-v.p_k` grows with the norm of any clip along the direction all CLIP features share
            (where the learned points sit): unknown clips far out get the largest logits. On the synthetic protocol
            the paper's ensemble ranks unknown clips *above* known ones and `"l2"`'s beats its own CLIP branch
            (hesp-hf's docs/open-set-quality.md). `"arpl"` reproduces published numbers.
        known_ce_weight, known_contrastive_weight, negative_clip_weight, negative_ce_weight, hybrid_ce_weight
        (`float`, *optional*, default to 1.0):
            Weights of the five loss terms `L_KN(CE)`, `L_KN(CL)`, `L_NE(CLIP)`, `L_NE(CE)`, `L_H`; 0 removes a term.
        reciprocal_margin_weight (`float`, *optional*, defaults to 0.1):
            Weight of the ARPL radius margin inside `L_NE(CE)`.
        reciprocal_margin (`float`, *optional*, defaults to 1.0):
            Margin of that term.
        reciprocal_temperature (`float`, *optional*, defaults to 1.0):
            Temperature dividing the reciprocal logits in `L_NE(CE)`.
        contrastive_temperature (`float`, *optional*, defaults to 0.5):
            Temperature of the supervised contrastive term `L_KN(CL)`.
        negative_visual_prompt_init_std (`float`, *optional*, defaults to 1.0):
            Std of the normal initialisation of the negative visual prompt images (normalised pixel space).
        inference_only (`bool`, *optional*, defaults to `False`):
            The lean inference form (`HESPForOpenSetVideoClassification.to_inference_only()`): the prompt side, which
            never changes after training (class-prompt features, reciprocal points), is stored as two `(K, D)`
            tensors, and the text tower, the prompt contexts and the negative prompt images are left out. Same logits;
            cannot compute the training loss.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std for new linear layers (CLIP's config has none, and transformers would fall back to 1.0).
    """

    model_type = "hesp"
    # Class-major tensors and the loss breakdown must not be concatenated over batches by `Trainer.predict`.
    # Outputs not gathered when evaluating (per-clip features and prompt features); `hesp_hf.evaluation` gathers the
    # rest: logits, open_set_score, clip_logits, reciprocal_logits.
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "video_embeds",
        "frame_weights",
        "text_embeds",
        "negative_visual_embeds",
        "loss_terms",
        "hidden_states",
        "attentions",
    ]

    num_frames: int = 8
    n_ctx: int = 4
    prompt_init_std: float = 0.02
    class_token_ids: list[list[int]] | None = None
    negative_prompt_token_ids: list[list[int]] | None = None
    class_prompt_template: str = "{}."
    negative_prompt_template: str = "This video is not {}."
    visual_prompt_size: int | None = None
    visual_prompt_location: Literal["dataset", "per_frame"] = "dataset"
    visual_prompt_center: list[int] | None = None
    visual_prompt_bound: float | None = None
    image_std: list[float] | None = None
    temporal_pooling: Literal["mean", "attention"] = "mean"
    use_visual_prompt: bool = True
    use_reciprocal_points: bool = True
    freeze_vision_tower: bool = True
    freeze_text_tower: bool = True
    unknown_label: str = "unknown"
    unknown_threshold: float | None = None
    # Conformal calibration and calibrated probabilities (hesp_hf.calibration); absent from older configs.
    known_acceptance: float | None = None
    calibration_scores: list[float] | None = None
    probability_temperature: float = 1.0
    open_set_score: Literal["max_logit", "max_softmax"] = "max_logit"
    inference_logits: Literal["ensemble", "clip", "prototypes"] = "ensemble"
    prototype_space: Literal["trained", "frozen"] = "trained"
    reciprocal_distance: Literal["arpl", "l2"] = "l2"
    known_ce_weight: float = 1.0
    known_contrastive_weight: float = 1.0
    negative_clip_weight: float = 1.0
    negative_ce_weight: float = 1.0
    hybrid_ce_weight: float = 1.0
    reciprocal_margin_weight: float = 0.1
    reciprocal_margin: float = 1.0
    reciprocal_temperature: float = 1.0
    contrastive_temperature: float = 0.5
    negative_visual_prompt_init_std: float = 1.0
    inference_only: bool = False
    initializer_range: float = 0.02
    auto_map: dict[str, str] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.image_std is None:
            self.image_std = list(CLIP_IMAGE_STD)
        if self.visual_prompt_size is None:
            self.visual_prompt_size = max(1, self.vision_config.image_size // 4)
        self.auto_map = {**HESP_AUTO_MAP, **(self.auto_map or {})}

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "HESPConfig":
        """As `PreTrainedConfig.from_dict`; a saved HESP config from before `reciprocal_distance` existed was trained
        with the paper's ARPL distance, and loads with it (not with today's default)."""
        if config_dict.get("class_token_ids") is not None and "reciprocal_distance" not in config_dict:
            config_dict = {**config_dict, "reciprocal_distance": "arpl"}
        return super().from_dict(config_dict, **kwargs)

    @property
    def known_labels(self) -> list[str]:
        """The `K` known class names in label order (every label but the trailing `unknown_label`)."""
        return [self.id2label[i] for i in range(self.num_labels - 1)]

    @property
    def num_known_labels(self) -> int:
        return self.num_labels - 1

    def validate_architecture(self):
        super().validate_architecture()
        image_size = self.vision_config.image_size
        if self.num_frames < 1:
            raise ValueError(f"HESPConfig.num_frames must be >= 1, got {self.num_frames}.")
        if self.n_ctx < 0:
            raise ValueError(f"HESPConfig.n_ctx must be >= 0, got {self.n_ctx}.")
        if not 1 <= self.visual_prompt_size <= image_size:
            raise ValueError(
                f"HESPConfig.visual_prompt_size must lie in [1, {image_size}] (the vision tower's image size), "
                f"got {self.visual_prompt_size}."
            )
        if self.visual_prompt_bound is not None and not self.visual_prompt_bound > 0:
            raise ValueError(
                f"HESPConfig.visual_prompt_bound must be > 0 (a change to [0, 1] pixels) or None (unbounded), got "
                f"{self.visual_prompt_bound}."
            )
        if self.visual_prompt_center is not None and (
            len(self.visual_prompt_center) != 2 or not all(0 <= c < image_size for c in self.visual_prompt_center)
        ):
            raise ValueError(
                f"HESPConfig.visual_prompt_center must be [row, col] inside the {image_size}x{image_size} image, "
                f"got {self.visual_prompt_center}."
            )
        if (
            self.open_set_score == "max_softmax"
            and self.unknown_threshold is not None
            and not 0 < self.unknown_threshold <= 1
        ):
            raise ValueError(
                f"HESPConfig.unknown_threshold must be a probability in (0, 1] with open_set_score='max_softmax', "
                f"got {self.unknown_threshold}."
            )
        if self.known_acceptance is not None and not 0 < self.known_acceptance < 1:
            raise ValueError(f"HESPConfig.known_acceptance must lie in (0, 1), got {self.known_acceptance}.")
        if not self.probability_temperature > 0:
            raise ValueError(f"HESPConfig.probability_temperature must be > 0, got {self.probability_temperature}.")
        if len(self.image_std) != self.vision_config.num_channels or min(self.image_std) <= 0:
            raise ValueError(
                f"HESPConfig.image_std must hold {self.vision_config.num_channels} positive values, got {self.image_std}."
            )
        for name in (
            "known_ce_weight",
            "known_contrastive_weight",
            "negative_clip_weight",
            "negative_ce_weight",
            "hybrid_ce_weight",
            "reciprocal_margin_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"HESPConfig.{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("contrastive_temperature", "reciprocal_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"HESPConfig.{name} must be > 0, got {getattr(self, name)}.")
        if self.class_token_ids is None:
            return  # a bare config (e.g. `AutoConfig.for_model("hesp")`): the model refuses it with a clear error
        num_known = len(self.class_token_ids)
        if self.id2label is None or len(self.id2label) != num_known + 1:
            raise ValueError(
                f"HESPConfig.id2label must list the {num_known} known classes of class_token_ids and then "
                f"'{self.unknown_label}', got {self.id2label}."
            )
        if self.id2label[num_known] != self.unknown_label:
            raise ValueError(
                f"HESPConfig.id2label[{num_known}] (the last label) must be unknown_label='{self.unknown_label}', "
                f"got '{self.id2label[num_known]}'."
            )
        if self.negative_prompt_token_ids is None or len(self.negative_prompt_token_ids) != num_known:
            raise ValueError(
                f"HESPConfig.negative_prompt_token_ids must hold one token list per known class ({num_known})."
            )
        max_len = self.text_config.max_position_embeddings
        for label, ids in zip(self.known_labels, self.class_token_ids, strict=True):
            if len(ids) < 2:
                raise ValueError(
                    f"HESPConfig.class_token_ids for '{label}' must hold start and end tokens, got {ids}."
                )
            if len(ids) + self.n_ctx > max_len:
                raise ValueError(
                    f"The prompt for '{label}' needs {len(ids) + self.n_ctx} tokens ({len(ids)} text tokens + "
                    f"n_ctx={self.n_ctx}), more than the text tower's max_position_embeddings={max_len}."
                )
        for label, ids in zip(self.known_labels, self.negative_prompt_token_ids, strict=True):
            if not 2 <= len(ids) <= max_len:
                raise ValueError(
                    f"HESPConfig.negative_prompt_token_ids for '{label}' must hold 2..{max_len} tokens, got {len(ids)}."
                )

    @classmethod
    def from_clip_config(
        cls, clip_config: CLIPConfig, labels: list[str], tokenizer: Any, **overrides: Any
    ) -> "HESPConfig":
        """Build a HESP configuration on the towers of `clip_config` for the known `labels` (in label order).

        `tokenizer` (the CLIP checkpoint's) turns the class and negative prompts into token ids once; they are kept
        in the configuration, so nothing later needs the tokenizer.
        """
        labels = [str(label) for label in labels]
        unknown_label = overrides.get("unknown_label", cls.unknown_label)
        if len(labels) < 1:
            raise ValueError("labels must name at least one known class.")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}.")
        if unknown_label in labels:
            raise ValueError(f"'{unknown_label}' is reserved for unseen expressions and cannot be a known label.")
        class_template = overrides.get("class_prompt_template", cls.class_prompt_template)
        negative_template = overrides.get("negative_prompt_template", cls.negative_prompt_template)

        def token_ids(text: str) -> list[int]:
            ids = list(tokenizer(text)["input_ids"])
            if len(ids) < 2 or ids[0] != tokenizer.bos_token_id or ids[-1] != tokenizer.eos_token_id:
                raise ValueError(
                    f"The tokenizer must add start ({tokenizer.bos_token_id}) and end ({tokenizer.eos_token_id}) "
                    f"tokens around '{text}', got {ids}."
                )
            return ids

        all_labels = [*labels, unknown_label]
        fields = {
            "text_config": clip_config.text_config.to_dict(),
            "vision_config": clip_config.vision_config.to_dict(),
            "projection_dim": clip_config.projection_dim,
            "logit_scale_init_value": clip_config.logit_scale_init_value,
            "initializer_factor": clip_config.initializer_factor,
            "id2label": dict(enumerate(all_labels)),
            "label2id": {label: i for i, label in enumerate(all_labels)},
            "class_token_ids": [token_ids(class_template.format(label)) for label in labels],
            "negative_prompt_token_ids": [token_ids(negative_template.format(label)) for label in labels],
        }
        fields.update(overrides)
        return cls(**fields)


__all__ = ["HESPConfig"]


# `from_pretrained` keywords that say where a checkpoint's files are (passed on when the other half is looked up).
LOCATION_KWARGS = ("cache_dir", "revision", "subfolder", "token", "local_files_only")
# The settings a HESP model and its video processor share, each as the model's config holds it: the number of frames
# (the pipeline samples the config's, training and evaluation the processor's) and the pixel std (the processor
# normalises with it, the model scales the visual prompt by it).
SHARED_SETTINGS = ("num_frames", "image_std")


def shared_settings(values: Any) -> dict[str, Any]:
    """The shared settings of a config, a processor or their saved JSON (a dict), comparable as they are:
    `num_frames` an int, `image_std` a list rounded to 6 decimals; absent ones left out."""
    found = {}
    for name in SHARED_SETTINGS:
        value = values.get(name) if isinstance(values, dict) else getattr(values, name, None)
        if value is None:
            continue
        found[name] = int(value) if name == "num_frames" else [round(float(v), 6) for v in value]
    return found


def saved_settings(pretrained: Any, filename: str, **kwargs: Any) -> dict[str, Any]:
    """The shared settings of a checkpoint's `config.json` (a HESP one) or `video_preprocessor_config.json`; empty when
    the file is absent."""
    location = {key: kwargs[key] for key in LOCATION_KWARGS if kwargs.get(key) is not None}
    try:
        path = cached_file(
            str(pretrained),
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            _raise_exceptions_for_gated_repo=False,
            **location,
        )
    except (OSError, ValueError):
        return {}
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or (filename == CONFIG_NAME and saved.get("model_type") != HESPConfig.model_type):
        return {}
    return shared_settings(saved)


def check_saved_pair(pretrained: Any, model_settings: dict[str, Any], processor_settings: dict[str, Any]) -> None:
    """One owner per shared setting: a checkpoint whose model and video processor disagree on one is refused, naming
    both values (the model's config owns them)."""
    problems = [
        f"{name}: {CONFIG_NAME} says {model_settings[name]}, {VIDEO_PROCESSOR_NAME} says {processor_settings[name]}"
        for name in SHARED_SETTINGS
        if name in model_settings and name in processor_settings and model_settings[name] != processor_settings[name]
    ]
    if problems:
        raise ValueError(
            f"{pretrained}: the model and its video processor disagree -- " + "; ".join(problems) + ". The model's "
            f"config owns them: set the processor's values in {VIDEO_PROCESSOR_NAME} to the config's (or retrain)."
        )
