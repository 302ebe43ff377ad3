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
"""HESP: a frozen CLIP made expression-sensitive by learned prompts, for open-set video facial expression recognition.

Paper: "Open-Set Video-based Facial Expression Recognition with Human Expression-sensitive Prompting" (ACM MM 2024).
Data flow, top to bottom as in the file: textual prompts -> visual prompt -> frames through the vision tower ->
temporal module -> CLIP and reciprocal logits -> ensemble + "unknown" column -> open-set loss.
This file travels inside every checkpoint (remote code): only single-dot relative imports and installed packages.
"""

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPTextModel, CLIPVisionModel
from transformers import initialization as init
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.models.clip.modeling_clip import CLIPPreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import VIDEO_PROCESSOR_NAME, TransformersKwargs, can_return_tuple, logging

from .configuration_hesp import HESPConfig, check_saved_pair, saved_settings, shared_settings
from .loss_hesp import HESPOpenSetLoss, ensemble_logits, reciprocal_logits
from .provenance_hesp import tell_if_drawn_faces


logger = logging.get_logger(__name__)

UNKNOWN_LABEL_ID = -1  # label of unknown-class clips in evaluation data; the loss leaves them out


@dataclass
class HESPVideoClassifierOutput(ModelOutput):
    r"""
    Output of [`HESPForOpenSetVideoClassification`]. `B` clips, `T` frames, `K` known classes, `D = projection_dim`.

    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
        The weighted open-set loss (sum of the active terms of `loss_terms`).
    logits (`torch.FloatTensor` of shape `(B, K + 1)`):
        The `K` ensemble logits `(clip_logits + reciprocal_logits) / 2` (`clip_logits` alone with
        `config.inference_logits="clip"`, the prototype head's `prototype_logits` with `"prototypes"`), then the
        "unknown" column, built so that the arg-max is "unknown" exactly
        when `open_set_score` falls below `config.unknown_threshold`; all `K + 1` divided by
        `config.probability_temperature` (1.0 until calibrated), so that a softmax over the `K` known columns gives
        the calibrated probabilities (the stock pipeline's scores are a softmax over all `K + 1`).
    open_set_score (`torch.FloatTensor` of shape `(B,)`):
        Known-ness score (higher means more likely a known expression) of those `K` logits: their maximum, or the
        maximum known-class softmax probability with `config.open_set_score="max_softmax"`.
    clip_logits (`torch.FloatTensor` of shape `(B, K)`):
        `logit_scale * cos(video_embeds, text_embeds)`.
    reciprocal_logits (`torch.FloatTensor` of shape `(B, K)`):
        Distances from the negative visual embeddings (reciprocal points), `config.reciprocal_distance`; `None` when
        `config.use_reciprocal_points` is off (the logits are then the CLIP logits alone).
    video_embeds (`torch.FloatTensor` of shape `(B, D)`):
        The temporally pooled, unnormalised video feature.
    frame_weights (`torch.FloatTensor` of shape `(B, T)`):
        Weights of the frames in `video_embeds` (uniform for `temporal_pooling="mean"`); each row sums to 1.
    text_embeds (`torch.FloatTensor` of shape `(K, D)`):
        Features of the learned class prompts.
    negative_visual_embeds (`torch.FloatTensor` of shape `(K, D)`):
        Features of the negative visual prompts, the reciprocal points (`None` when they are switched off).
    loss_terms (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` is given):
        Unweighted value of each active loss term, for logging.
    hidden_states (`tuple[torch.FloatTensor]`, *optional*, returned with `output_hidden_states=True`):
        The vision tower's own hidden states (on the autograd graph), the embeddings and then each layer, each
        `(B * T, P + 1, W)`: `P` patches and the class token of width `W`, the frames of clip `b` in rows
        `b * T` to `(b + 1) * T - 1`, as X-CLIP's vision tower gives them.
    attentions (`tuple[torch.FloatTensor]`, *optional*, returned with `output_attentions=True`):
        The vision tower's attention weights, per layer `(B * T, heads, P + 1, P + 1)` (eager attention only).

    `vision_hidden_states` / `vision_attentions`, the names before hesp-hf 0.2, still read (with a `FutureWarning`)
    as those tensors per clip, `(B, T, ...)`, until 0.3.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    open_set_score: torch.FloatTensor | None = None
    clip_logits: torch.FloatTensor | None = None
    reciprocal_logits: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    frame_weights: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    negative_visual_embeds: torch.FloatTensor | None = None
    loss_terms: dict[str, torch.FloatTensor] | None = None
    # Last, as in the library's outputs: the tuple form ends with them.
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None

    # Renamed in hesp-hf 0.2 to the library's names; the old names stay readable until 0.3.
    _RENAMED = {"vision_hidden_states": "hidden_states", "vision_attentions": "attentions"}

    def _renamed(self, old: str) -> tuple[torch.FloatTensor, ...] | None:
        new = self._RENAMED[old]
        warnings.warn(
            f"HESPVideoClassifierOutput.{old} is deprecated and will be removed in hesp-hf 0.3: read `{new}` "
            f"(the vision tower's own tensors, (batch * frames, ...)); `{old}` gives them per clip (batch, frames, ...).",
            FutureWarning,
            stacklevel=3,
        )
        tensors = getattr(self, new)
        if tensors is None or self.frame_weights is None:
            return tensors
        batch, frames = self.frame_weights.shape
        return tuple(t.view(batch, frames, *t.shape[1:]) for t in tensors)

    @property
    def vision_hidden_states(self) -> tuple[torch.FloatTensor, ...] | None:
        return self._renamed("vision_hidden_states")

    @property
    def vision_attentions(self) -> tuple[torch.FloatTensor, ...] | None:
        return self._renamed("vision_attentions")

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str) and key in self._RENAMED:
            return self._renamed(key)
        return super().__getitem__(key)


class _StateCache:
    """Keeps one value derived from some tensors and recomputes it when any of them changes.

    A change is a new storage (`.to()`, reload), an in-place update (the optimizer bumps `_version`) or another
    autocast state. Used only where the value needs no graph: frozen inputs, or gradients disabled.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Any = None

    def get(self, tensors: Sequence[torch.Tensor], compute: Callable[[], Any]) -> Any:
        device_type = tensors[0].device.type
        key = (
            torch.is_autocast_enabled(device_type),
            torch.get_autocast_dtype(device_type),
            *((t.data_ptr(), t._version, t.dtype) for t in tensors),
        )
        if key != self.key:
            self.value = compute()
            self.key = key
        return self.value

    def clear(self) -> None:
        self.key, self.value = None, None


class HESPPromptLearner(nn.Module):
    """Textual prompting (paper: learnable textual prompts; CoOp form, class-specific context).

    Prompt of class k: `[SOS] ctx_k,1 .. ctx_k,M <tokens of "name."> [EOS]`; the context vectors are the only
    learnable part. The fixed token ids come from the config and are rebuilt in `_init_weights` (non-persistent).
    """

    def __init__(self, config: HESPConfig):
        super().__init__()
        self.config = config
        num_known = len(config.class_token_ids)
        self.n_ctx = config.n_ctx
        self.ctx = nn.Parameter(torch.empty(num_known, config.n_ctx, config.text_config.hidden_size))
        ids, lengths = self.token_id_tensors(config)
        self.class_token_ids = nn.Buffer(ids, persistent=False)  # (K, L) with n_ctx placeholder slots after SOS
        self.class_lengths = nn.Buffer(lengths, persistent=False)  # (K,) position of EOS + 1

    @staticmethod
    def token_id_tensors(config: HESPConfig) -> tuple[torch.Tensor, torch.Tensor]:
        placeholder = config.class_token_ids[0][-1]  # any id: these slots are overwritten by the context vectors
        sequences = [[ids[0], *([placeholder] * config.n_ctx), *ids[1:]] for ids in config.class_token_ids]
        return pad_token_ids(sequences)

    def prompt_embeds(self, token_embedding: nn.Embedding) -> torch.Tensor:
        embeds = token_embedding(self.class_token_ids)  # (K, L, W)
        prefix = embeds[:, :1]  # (K, 1, W) SOS
        suffix = embeds[:, 1 + self.n_ctx :]  # (K, L - 1 - M, W) class name, ".", EOS, padding
        return torch.cat([prefix, self.ctx.to(embeds.dtype), suffix], dim=1)  # (K, L, W)


class HESPPatchEmbedding(nn.Conv2d):
    """CLIP's patch embedding (a convolution whose stride is its kernel), computed as one matmul over the unfolded
    patches when a gradient has to flow through it on the CPU; elsewhere the convolution itself, so inference is
    bit-for-bit stock CLIP.

    Why: HESP trains a pixel-space prompt, so every training step back-propagates through this layer to the input,
    and oneDNN's convolution backward is far slower than the equivalent matmul's (ViT-B/32, 64 frames, forward +
    backward: 0.90 s against 0.20 s in float32, 0.58 s against 0.08 s in bfloat16, on this project's 2-core AVX-512
    CPU). Same parameter, same state-dict key; the two paths differ only by float rounding.
    """

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (pixel_values.requires_grad or self.weight.requires_grad)
        if not (needs_grad and pixel_values.device.type == "cpu" and self._is_patchify()):
            return super().forward(pixel_values)
        batch, channels, height, width = pixel_values.shape
        patch = self.kernel_size[0]
        rows, cols = height // patch, width // patch
        patches = (
            pixel_values[..., : rows * patch, : cols * patch]
            .reshape(batch, channels, rows, patch, cols, patch)
            .permute(0, 2, 4, 1, 3, 5)
            .reshape(batch, rows * cols, channels * patch * patch)
        )  # (N, L, C*P*P), in the weight's (C, P, P) order
        embeds = F.linear(patches, self.weight.flatten(1), self.bias)  # (N, L, D)
        return embeds.view(batch, rows, cols, -1).permute(0, 3, 1, 2)  # (N, D, rows, cols), as the convolution

    def _is_patchify(self) -> bool:
        return (
            self.stride == self.kernel_size
            and self.kernel_size[0] == self.kernel_size[1]
            and self.padding == (0, 0)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
        )

    @classmethod
    def replacing(cls, convolution: nn.Conv2d) -> "HESPPatchEmbedding":
        """A patch embedding with `convolution`'s shape, sharing its parameters."""
        layer = cls(
            convolution.in_channels,
            convolution.out_channels,
            kernel_size=convolution.kernel_size,
            stride=convolution.stride,
            bias=convolution.bias is not None,
            device="meta",
        )
        layer.weight, layer.bias = convolution.weight, convolution.bias
        # Initialised exactly when the convolution was (by the tower's own `post_init`), so that the model's
        # initialisation does not draw this weight again on one construction path and not on the other.
        layer._is_hf_initialized = getattr(convolution, "_is_hf_initialized", False)
        return layer


class HESPVisualPrompt(nn.Module):
    """Expression-sensitive visual prompt (paper: learnable visual prompt inside the expression-sensitive mask).

    A `P x P` pixel-space patch, zero at init, added inside a square at the expression-salient location. Adding
    `delta` to [0, 1] pixels before normalisation equals adding `delta / std` to the normalised pixels.
    """

    def __init__(self, config: HESPConfig):
        super().__init__()
        self.config = config
        self.size = config.visual_prompt_size
        self.delta = nn.Parameter(torch.empty(config.vision_config.num_channels, self.size, self.size))

    def top_left(self, center: Sequence[int], image_size: int) -> tuple[int, int]:
        """Clamp a `[row, col]` centre so the whole square fits inside the image."""
        highest = image_size - self.size
        return tuple(min(max(int(c) - self.size // 2, 0), highest) for c in center)

    def pixel_delta(self) -> torch.Tensor:
        """The change the prompt makes to [0, 1] pixels `(C, P, P)`: `delta`, or `bound * tanh(delta / bound)` with
        `config.visual_prompt_bound` (equal to `delta` while small, never past the bound)."""
        bound = self.config.visual_prompt_bound
        return self.delta if bound is None else bound * torch.tanh(self.delta / bound)

    def scaled_delta(self, like: torch.Tensor) -> torch.Tensor:
        std = torch.tensor(self.config.image_std, device=like.device, dtype=like.dtype)
        return self.pixel_delta().to(like.dtype) / std[:, None, None]  # (C, P, P)

    def add_at(self, pixel_values: torch.Tensor, top: int, left: int) -> torch.Tensor:
        """One location for every frame: `pixel_values (..., C, H, W)`, one broadcast over batch and time."""
        height, width = pixel_values.shape[-2:]
        padded = F.pad(
            self.scaled_delta(pixel_values), (left, width - left - self.size, top, height - top - self.size)
        )
        return pixel_values + padded  # (C, H, W) broadcast over the leading axes

    def add_per_frame(self, frames: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor) -> torch.Tensor:
        """A location per frame: `frames (N, C, H, W)`, `tops`, `lefts (N,)`; gathers the patch, no Python loop."""
        _, _, height, width = frames.shape
        rows = torch.arange(height, device=frames.device)[None, :] - tops[:, None]  # (N, H) offsets in the patch
        cols = torch.arange(width, device=frames.device)[None, :] - lefts[:, None]  # (N, W)
        inside = ((rows >= 0) & (rows < self.size))[:, :, None] & ((cols >= 0) & (cols < self.size))[:, None, :]
        patch = self.scaled_delta(frames)[
            :, rows.clamp(0, self.size - 1)[:, :, None], cols.clamp(0, self.size - 1)[:, None, :]
        ]  # (C, N, H, W)
        return frames + patch.permute(1, 0, 2, 3) * inside[:, None].to(frames.dtype)


class HESPTemporalPooling(nn.Module):
    """Temporal prompting: frame features `(B, T, D)` -> video feature `(B, D)` and frame weights `(B, T)`.

    `"mean"` is the paper's temporal global pooling (TGP). `"attention"` weighs frames by a learned query and by
    their similarity to the class prompts (expression-sensitive); both start at zero, so it starts as the mean.
    """

    def __init__(self, config: HESPConfig):
        super().__init__()
        self.mode = config.temporal_pooling
        if self.mode == "attention":
            self.query = nn.Parameter(torch.empty(config.projection_dim))
            self.text_guidance = nn.Parameter(torch.empty(()))

    def forward(self, frame_embeds: torch.Tensor, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames, _ = frame_embeds.shape
        if self.mode == "mean":
            weights = frame_embeds.new_full((batch, frames), 1.0 / frames)
            return frame_embeds.mean(dim=1), weights
        normalized = F.normalize(frame_embeds, dim=-1)  # (B, T, D)
        relevance = (normalized @ F.normalize(text_embeds, dim=-1).T).amax(dim=-1)  # (B, T) best class match
        scores = normalized @ self.query.to(normalized.dtype) + self.text_guidance.to(normalized.dtype) * relevance
        weights = scores.softmax(dim=-1)  # (B, T)
        return (weights[:, :, None] * frame_embeds).sum(dim=1), weights


class HESPReciprocalPoints(nn.Module):
    """Negative visual prompts (paper): one learnable image per known class, encoded by the frozen vision tower into
    the reciprocal points of the ARPL branch, with the learnable radius of its margin term."""

    def __init__(self, config: HESPConfig):
        super().__init__()
        vision = config.vision_config
        num_known = len(config.class_token_ids)
        self.images = nn.Parameter(torch.empty(num_known, vision.num_channels, vision.image_size, vision.image_size))
        self.radius = nn.Parameter(torch.empty(()))


def frozen_frame_mean(frame_embeds: torch.Tensor) -> torch.Tensor:
    """`(B, D)`: frame features `(B, T, D)` L2-normalised, then averaged over the frames."""
    return F.normalize(frame_embeds.float(), dim=-1).mean(dim=1).to(frame_embeds.dtype)


def pad_token_ids(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to one tensor `(N, L)` and return their lengths `(N,)`.

    The text tower is causal, so padding after EOS never changes the EOS feature: sequences are kept as short as the
    longest prompt instead of CLIP's 77 positions.
    """
    width = max(len(sequence) for sequence in sequences)  # plain Python: the model may be built on the meta device
    padded = [[*sequence, *([sequence[-1]] * (width - len(sequence)))] for sequence in sequences]
    lengths = [len(sequence) for sequence in sequences]
    return torch.tensor(padded, dtype=torch.long), torch.tensor(lengths, dtype=torch.long)


class HESPPreTrainedModel(CLIPPreTrainedModel):
    config: HESPConfig
    config_class = HESPConfig
    base_model_prefix = "hesp"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video",)

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: HESP initialises only through `transformers.initialization`, which never overwrites a loaded tensor.

        For code outside the library transformers otherwise takes a shortcut meant for remote code that writes weights
        in place: it marks as initialised every module without parameters of its own, so CLIP's attention and MLP
        blocks (which initialise their child layers) were skipped when `from_pretrained` built the model, and its
        towers started with std 0.02 instead of CLIP's scheme that `HESPForOpenSetVideoClassification(config)` gives.
        """
        return False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # CLIP's own sub-modules
        config = self.config
        if isinstance(module, HESPForOpenSetVideoClassification):
            # CLIP's projection scheme (`CLIPModel`); the layers themselves were initialised just before (children
            # first), so this is their final value on every construction path.
            factor = config.initializer_factor
            if not config.inference_only:
                init.normal_(module.text_projection.weight, std=config.text_config.hidden_size**-0.5 * factor)
            init.normal_(module.visual_projection.weight, std=config.vision_config.hidden_size**-0.5 * factor)
            init.constant_(module.logit_scale, config.logit_scale_init_value)
            init.zeros_(module.class_prototypes)
            if config.inference_only:  # persistent buffers: garbage after an empty-state-dict load otherwise
                init.zeros_(module.inference_class_text_embeds)
                init.zeros_(module.inference_negative_visual_embeds)
        elif isinstance(module, HESPPromptLearner):
            init.normal_(module.ctx, std=config.prompt_init_std)
            ids, lengths = HESPPromptLearner.token_id_tensors(config)
            init.copy_(module.class_token_ids, ids)
            init.copy_(module.class_lengths, lengths)
        elif isinstance(module, HESPVisualPrompt):
            init.zeros_(module.delta)
        elif isinstance(module, HESPTemporalPooling) and module.mode == "attention":
            init.zeros_(module.query)
            init.zeros_(module.text_guidance)
        elif isinstance(module, HESPReciprocalPoints):
            init.normal_(module.images, std=config.negative_visual_prompt_init_std)
            init.zeros_(module.radius)


class HESPForOpenSetVideoClassification(HESPPreTrainedModel):
    """HESP video classifier: `K` known expressions plus "unknown".

    CLIP's attribute names (`text_model`, `vision_model`, `visual_projection`, `text_projection`, `logit_scale`) are
    kept, so any CLIP checkpoint loads into it 1:1 (see `from_clip`).
    """

    accepts_loss_kwargs = False  # the loss is a plain batch mean: Trainer must not rescale it
    # Weights that are expected to be missing, as the library declares them: HESP's own modules when the towers come
    # from a CLIP checkpoint (`from_clip`), and `class_prototypes` in checkpoints written before the prototype head
    # (they load and keep their own head).
    _keys_to_ignore_on_load_missing = [
        r"^class_prototypes$",
        r"^prompt_learner\.ctx$",
        r"^visual_prompt\.delta$",
        r"^temporal_pooling\.(query|text_guidance)$",
        r"^reciprocal_points\.(images|radius)$",
    ]

    def __init__(self, config: HESPConfig):
        super().__init__(config)
        if not config.class_token_ids:
            raise ValueError(
                "HESPConfig.class_token_ids is empty: build the model with "
                "HESPForOpenSetVideoClassification.from_clip(clip_name_or_path, labels=[...]) "
                "or the config with HESPConfig.from_clip_config(...)."
            )
        self.vision_model = CLIPVisionModel._from_config(config.vision_config)
        embeddings = self.vision_model.embeddings
        embeddings.patch_embedding = HESPPatchEmbedding.replacing(embeddings.patch_embedding)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.visual_prompt = HESPVisualPrompt(config)
        self.temporal_pooling = HESPTemporalPooling(config)
        self.open_set_loss = HESPOpenSetLoss(config)
        # The prototype head (`inference_logits="prototypes"`): one unit vector per known class, the mean trained
        # video embedding of its training clips (`set_class_prototypes`); zeros until fitted.
        self.class_prototypes = nn.Buffer(torch.zeros(len(config.class_token_ids), config.projection_dim))
        if config.inference_only:
            # The prompt side, fixed after training, as its two (K, D) results (see `to_inference_only`).
            shape = (len(config.class_token_ids), config.projection_dim)
            self.inference_class_text_embeds = nn.Buffer(torch.zeros(shape))
            self.inference_negative_visual_embeds = nn.Buffer(torch.zeros(shape))
        else:
            self.text_model = CLIPTextModel._from_config(config.text_config)
            self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
            self.prompt_learner = HESPPromptLearner(config)
            self.reciprocal_points = HESPReciprocalPoints(config)
            negative_ids, negative_lengths = pad_token_ids(config.negative_prompt_token_ids)
            self.negative_token_ids = nn.Buffer(negative_ids, persistent=False)  # (K, Ln)
            self.negative_lengths = nn.Buffer(negative_lengths, persistent=False)  # (K,)
        self._negative_text_cache = _StateCache()
        self._class_text_cache = _StateCache()
        self._reciprocal_cache = _StateCache()
        self.post_init()
        self.freeze_clip_towers()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """As `PreTrainedModel.from_pretrained`, then re-applies the tower freezing (loading replaces parameters,
        which resets `requires_grad`) and checks the checkpoint's prototype head and video processor."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.freeze_clip_towers()
        if model.config.inference_logits == "prototypes" and not bool(model.class_prototypes.any()):
            raise ValueError(
                "The config predicts with the prototype head (inference_logits='prototypes'), but the checkpoint holds "
                "no class_prototypes: fit them with model.set_class_prototypes(video_embeds, labels) on the training "
                "clips, or set inference_logits to 'ensemble' or 'clip'."
            )
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if source is not None:  # a video processor saved beside the model must share the config's settings
            processor = saved_settings(source, VIDEO_PROCESSOR_NAME, **kwargs)
            check_saved_pair(source, shared_settings(model.config), processor)
        tell_if_drawn_faces(model.config, source)  # the demo model on real footage answers nonsense: say so
        return loaded

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self and not self.config.inference_only:
            negative_ids, negative_lengths = pad_token_ids(self.config.negative_prompt_token_ids)
            init.copy_(self.negative_token_ids, negative_ids)
            init.copy_(self.negative_lengths, negative_lengths)

    def freeze_clip_towers(self) -> None:
        """Apply `config.freeze_vision_tower` / `config.freeze_text_tower` (frozen by name, as in the paper)."""
        if self.config.inference_only:
            self.requires_grad_(False)
            return
        vision = [self.vision_model, self.visual_projection]
        text = [self.text_model, self.text_projection]
        for modules, frozen in ((vision, self.config.freeze_vision_tower), (text, self.config.freeze_text_tower)):
            for module in modules:
                module.requires_grad_(not frozen)
        self.logit_scale.requires_grad_(not self.config.freeze_text_tower)
        # Ablated modules take no part in training either.
        self.visual_prompt.requires_grad_(self.config.use_visual_prompt)
        self.reciprocal_points.requires_grad_(self.config.use_reciprocal_points)

    # ----------------------------------------------------------------------------------------------- CLIP towers
    def get_input_embeddings(self) -> nn.Module:
        """The vision tower's patch embedding, as `CLIPVisionModel` and VideoMAE give it: the layer frames enter by."""
        return self.vision_model.embeddings.patch_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.vision_model.embeddings.patch_embedding = value

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        """As `CLIPModel.get_image_features`: the vision tower's output for normalised images `(N, C, H, W)`, with
        `pooler_output` the projected CLIP image features `(N, D)`; `kwargs` go to the tower
        (`output_hidden_states`, `output_attentions`, ...)."""
        outputs = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        outputs.pooler_output = self.visual_projection(outputs.pooler_output)
        return outputs

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The projected CLIP image features `(N, D)` of normalised images `(N, C, H, W)`."""
        return self.get_image_features(pixel_values, return_dict=True).pooler_output

    def encode_text_embeds(self, inputs_embeds: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """CLIP text features `(N, D)` of token embeddings `(N, L, W)` pooled at position `lengths - 1` (EOS).

        `CLIPTextModel.forward` only takes token ids, so this runs its parts: embeddings (adds positions), causal
        mask, encoder, final layer norm, EOS pooling, projection.
        """
        text = self.text_tower()
        hidden = text.embeddings(inputs_embeds=inputs_embeds)
        mask = create_causal_mask(config=text.config, inputs_embeds=hidden, attention_mask=None, cache=None)
        hidden = text.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
        hidden = text.final_layer_norm(hidden)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]  # (N, W)
        return self.text_projection(pooled)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        """As `CLIPModel.get_text_features`: the text tower's output for token ids `(N, L)` (as CLIP's tokenizer gives
        them), with `pooler_output` the projected CLIP text features `(N, D)`, pooled at each text's EOS."""
        outputs = self.text_tower()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, return_dict=True, **kwargs
        )
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs

    # --------------------------------------------------------------------------------------- prompt features
    def class_text_embeds(self) -> torch.Tensor:
        """Features `(K, D)` of the learned class prompts; cached while no gradient is being recorded."""
        if self.config.inference_only:
            return self.inference_class_text_embeds

        def compute() -> torch.Tensor:
            embeds = self.prompt_learner.prompt_embeds(self.text_model.embeddings.token_embedding)
            return self.encode_text_embeds(embeds, self.prompt_learner.class_lengths)

        if torch.is_grad_enabled():
            self._class_text_cache.clear()
            return compute()
        return self._class_text_cache.get(self._text_state() + [self.prompt_learner.ctx], compute)

    def negative_text_embeds(self) -> torch.Tensor:
        """Features `(K, D)` of "This video is not <class>.": constants for a frozen text tower, computed once."""

        def compute() -> torch.Tensor:
            with torch.set_grad_enabled(not self.config.freeze_text_tower and torch.is_grad_enabled()):
                return self.text_embeds_of_ids(self.negative_token_ids, self.negative_lengths)

        if not self.config.freeze_text_tower and torch.is_grad_enabled():
            return compute()
        return self._negative_text_cache.get(self._text_state(), compute)

    def text_embeds_of_ids(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """CLIP text features `(N, D)` of token ids `(N, L)` whose EOS sits at `lengths - 1`."""
        return self.encode_text_embeds(self.text_tower().embeddings.token_embedding(input_ids), lengths)

    def candidate_text_embeds(self, input_ids: Sequence[Sequence[int]], learned_context: bool = False) -> torch.Tensor:
        """Features `(N, D)` of texts the model was not trained on (expression names or descriptions), from their
        token ids as CLIP's tokenizer gives them (`[SOS] ... [EOS]`, unpadded). `learned_context=True` puts the mean
        of the classes' learned context vectors after SOS, as the class prompts have theirs (CoOp's context applied
        to new class texts); the texts must then leave `n_ctx` positions free in the text tower's context."""
        if not input_ids:
            raise ValueError("candidate_text_embeds needs at least one text.")
        ids, lengths = pad_token_ids(input_ids)
        ids, lengths = ids.to(self.logit_scale.device), lengths.to(self.logit_scale.device)
        embeds = self.text_tower().embeddings.token_embedding(ids)  # (N, L, W)
        if learned_context:
            context = self.prompt_learner.ctx.mean(dim=0).to(embeds.dtype)  # (M, W)
            embeds = torch.cat([embeds[:, :1], context.expand(len(embeds), -1, -1), embeds[:, 1:]], dim=1)
            lengths = lengths + context.shape[0]
        limit = self.config.text_config.max_position_embeddings
        if embeds.shape[1] > limit:
            raise ValueError(
                f"A candidate text takes {embeds.shape[1]} positions with the context, more than the text tower's "
                f"{limit}: shorten it (hesp_hf.inference.zero_shot truncates with a warning)."
            )
        with torch.no_grad():
            return self.encode_text_embeds(embeds, lengths)

    def candidate_logits(self, video_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """`(B, N)`: CLIP's logit scale times the cosine of each clip's video embedding with each candidate text's."""
        return self.scaled_cosine(video_embeds, text_embeds)

    def text_tower(self) -> CLIPTextModel:
        """The CLIP text tower; a clear error for an inference-only model, which has none."""
        if self.config.inference_only:
            raise ValueError(
                "This inference-only HESP model has no text tower (config.inference_only=True): load the full "
                "checkpoint to encode text or train."
            )
        return self.text_model

    def negative_visual_embeds(self) -> torch.Tensor:
        """Reciprocal points `(K, D)`: the negative visual prompt images through the vision tower."""
        if self.config.inference_only:
            return self.inference_negative_visual_embeds
        images = self.reciprocal_points.images

        def compute() -> torch.Tensor:
            return self.image_embeds(images.to(self.visual_projection.weight.dtype))

        if torch.is_grad_enabled():
            self._reciprocal_cache.clear()
            return compute()
        return self._reciprocal_cache.get(self._vision_state() + [images], compute)

    @torch.no_grad()
    def to_inference_only(self) -> "HESPForOpenSetVideoClassification":
        """A lean copy for inference: the prompt side, constant after training, computed once and stored as the
        class-prompt features and the reciprocal points (two `(K, D)` tensors); the text tower, `text_projection`,
        the prompt contexts and the negative prompt images are left out (about 40 % of a ViT-B CLIP's parameters).

        The copy gives the same logits bit for bit (it holds exactly the tensors this model computes in `forward`),
        saves and loads like any checkpoint (`save_pretrained`, the Auto classes, the pipeline, remote code), and
        cannot compute the training loss. This model is left unchanged.
        """
        if self.config.inference_only:
            return self
        config = copy.deepcopy(self.config)
        config.inference_only = True
        lean = type(self)(config).to(device=self.device, dtype=self.dtype)
        state = {key: value for key, value in self.state_dict().items() if key in lean.state_dict()}
        state["inference_class_text_embeds"] = self.class_text_embeds()
        state["inference_negative_visual_embeds"] = self.negative_visual_embeds()
        lean.load_state_dict(state, strict=True)
        return lean.eval()

    def _text_state(self) -> list[torch.Tensor]:
        return [*self.text_model.parameters(), self.text_projection.weight]

    def _vision_state(self) -> list[torch.Tensor]:
        return [*self.vision_model.parameters(), self.visual_projection.weight]

    # ------------------------------------------------------------------------------------ visual prompt location
    @torch.no_grad()
    def saliency_maps(self, frames: torch.Tensor, text_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Expression saliency `(N, H, W)` of normalised frames `(N, C, H, W)` from the frozen CLIP itself.

        Each patch token (through `post_layernorm` and `visual_projection`) is compared with the class prompt features;
        the similarities are weighted by the frame's own class probabilities (a CAM of the predicted expressions,
        from real CLIP features instead of the released code's untrained layer), then upsampled to pixels.
        """
        if text_embeds is None:
            text_embeds = self.class_text_embeds()
        outputs = self.vision_model(pixel_values=frames.to(self.visual_projection.weight.dtype), return_dict=True)
        patch_tokens = self.vision_model.post_layernorm(outputs.last_hidden_state[:, 1:])  # (N, P, W)
        patches = F.normalize(self.visual_projection(patch_tokens), dim=-1)  # (N, P, D)
        image = F.normalize(self.visual_projection(outputs.pooler_output), dim=-1)  # (N, D)
        text = F.normalize(text_embeds.to(patches.dtype), dim=-1)  # (K, D)
        probs = (self.logit_scale.exp() * image @ text.T).softmax(dim=-1)  # (N, K)
        saliency = ((patches @ text.T) * probs[:, None, :]).sum(dim=-1)  # (N, P)
        grid = int(round(saliency.shape[1] ** 0.5))
        saliency = saliency.view(-1, 1, grid, grid).float()
        return F.interpolate(saliency, size=frames.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

    def prompt_top_left(self, saliency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-left corners `(N,)`, `(N,)` of the `P x P` square with the highest mean saliency in each map `(N, H, W)`."""
        size = self.visual_prompt.size
        box_mean = F.avg_pool2d(saliency[:, None], kernel_size=size, stride=1)[:, 0]  # (N, H-P+1, W-P+1)
        flat = box_mean.flatten(1).argmax(dim=1)
        return flat // box_mean.shape[-1], flat % box_mean.shape[-1]

    @torch.no_grad()
    def estimate_visual_prompt_location(self, videos: Iterable[torch.Tensor]) -> list[int]:
        """The `[row, col]` centre of the visual prompt with the highest mean saliency over `videos` (batches
        `(B, T, C, H, W)` of normalised frames, e.g. a sample of training clips). Nothing is changed: store it in
        `config.visual_prompt_center` to use it."""
        total, count = None, 0
        text_embeds = self.class_text_embeds()
        for video in videos:
            frames = video.flatten(0, 1).to(self.device)
            maps = self.saliency_maps(frames, text_embeds)
            total = maps.sum(dim=0) if total is None else total + maps.sum(dim=0)
            count += maps.shape[0]
        if count == 0:
            raise ValueError("estimate_visual_prompt_location needs at least one clip.")
        top, left = self.prompt_top_left((total / count)[None])
        half = self.visual_prompt.size // 2
        center = [int(top) + half, int(left) + half]
        logger.info("Visual prompt centre estimated from %d frames: %s", count, center)
        return center

    def add_visual_prompt(self, frames: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Prompted frames `(N, C, H, W)` from normalised frames `(N, C, H, W)`."""
        image_size = frames.shape[-1]
        if not self.config.use_visual_prompt:
            return frames
        if self.config.visual_prompt_location == "per_frame":
            tops, lefts = self.prompt_top_left(self.saliency_maps(frames, text_embeds.detach()))
            return self.visual_prompt.add_per_frame(frames, tops, lefts)
        center = self.config.visual_prompt_center or [image_size // 2, image_size // 2]
        top, left = self.visual_prompt.top_left(center, image_size)
        return self.visual_prompt.add_at(frames, top, left)

    def encode_frames(
        self, pixel_values_videos: torch.Tensor, text_embeds: torch.Tensor, **tower_kwargs: Any
    ) -> BaseModelOutputWithPooling:
        """The vision tower's output for normalised frames `(B, T, C, H, W)` with the visual prompt added:
        `pooler_output` the frame features `(B, T, D)`; `last_hidden_state`, `hidden_states` and `attentions` (with
        `output_hidden_states` / `output_attentions` in `tower_kwargs`) the tower's own tensors over the `B * T`
        frames, clip-major, so that they stay the ones the logits are computed from (a gradient reaches them)."""
        if pixel_values_videos.dim() != 5:
            raise ValueError(
                f"pixel_values_videos must be (batch, frames, channels, height, width), got {tuple(pixel_values_videos.shape)}."
            )
        batch, frames = pixel_values_videos.shape[:2]
        flat = pixel_values_videos.to(self.visual_projection.weight.dtype).flatten(0, 1)  # (B*T, C, H, W)
        prompted = self.add_visual_prompt(flat, text_embeds)
        outputs = self.get_image_features(prompted, return_dict=True, **tower_kwargs)
        outputs.pooler_output = outputs.pooler_output.view(batch, frames, -1)
        return outputs

    # -------------------------------------------------------------------------------------------------- forward
    # Keyword arguments `forward` hands to the vision tower besides its named ones (attention-implementation
    # arguments and the like); anything else is refused, so a misspelt option is not silently ignored.
    _TOWER_KWARGS = frozenset(TransformersKwargs.__annotations__) - {"num_items_in_batch"}

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        frame_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> HESPVideoClassifierOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(B, T, C, H, W)`):
            Normalised frames, as produced by [`HESPVideoProcessor`]; `T` may differ from `config.num_frames`.
        labels (`torch.LongTensor` of shape `(B,)`, *optional*):
            Known-class indices `0..K-1`; when given, the open-set loss is returned. `-1` marks an unknown clip, left
            out of the label terms (so a `Trainer` can evaluate on open-set data).
        output_hidden_states (`bool`, *optional*, defaults to `config.output_hidden_states`):
            Return the vision tower's hidden states of every frame, `hidden_states`.
        output_attentions (`bool`, *optional*, defaults to `config.output_attentions`):
            Return the vision tower's attention maps of every frame, `attentions` (needs eager attention:
            `from_pretrained(..., attn_implementation="eager")`).
        frame_embeds (`torch.FloatTensor` of shape `(B, T, D)`, *optional*):
            Instead of `pixel_values_videos`: the frames' CLIP image features (`image_embeds`), e.g. cached
            once for training on a frozen vision tower. Only without the visual prompt, which acts on pixels.
        interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
            Let the vision tower read frames of another size than `config.vision_config.image_size`, as in CLIP.
        return_dict (`bool`, *optional*, defaults to `config.return_dict`):
            `False` gives `HESPVideoClassifierOutput.to_tuple()`: the outputs that are set, in field order.
        kwargs:
            Passed on to the vision tower (the library's `TransformersKwargs`).

        Example:

        ```python
        >>> import torch
        >>> from hesp_hf import HESPForOpenSetVideoClassification

        >>> model = HESPForOpenSetVideoClassification.from_pretrained("runs/dfew-1").eval()  # a trained folder
        >>> pixels = torch.randn(2, model.config.num_frames, 3, 224, 224)  # HESPVideoProcessor's output
        >>> with torch.no_grad():
        ...     output = model(pixel_values_videos=pixels)
        >>> logits = output.logits  # (2, K + 1): the K known classes, then "unknown"
        >>> labels = [model.config.id2label[int(i)] for i in logits.argmax(-1)]  # known classes or "unknown"
        ```
        """
        kwargs.pop("num_items_in_batch", None)  # the loss is a plain batch mean (`accepts_loss_kwargs = False`)
        unexpected = sorted(set(kwargs) - self._TOWER_KWARGS)
        if unexpected:
            raise TypeError(
                f"HESPForOpenSetVideoClassification.forward() got unexpected arguments {unexpected}; it takes "
                "pixel_values_videos or frame_embeds, labels, output_hidden_states, output_attentions, "
                "interpolate_pos_encoding, return_dict and the vision tower's keyword arguments."
            )
        if (pixel_values_videos is None) == (frame_embeds is None):
            raise ValueError("Pass exactly one of pixel_values_videos and frame_embeds.")
        text_embeds = self.class_text_embeds()  # (K, D)
        tower = None
        if frame_embeds is None:
            tower = self.encode_frames(
                pixel_values_videos,
                text_embeds,
                output_hidden_states=(
                    self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
                ),
                output_attentions=self.config.output_attentions if output_attentions is None else output_attentions,
                interpolate_pos_encoding=interpolate_pos_encoding,
                **kwargs,
            )
            frame_embeds = tower.pooler_output
        elif output_hidden_states or output_attentions:
            raise ValueError("frame_embeds skip the vision tower: it has no hidden states or attentions to return.")
        elif self.config.use_visual_prompt:
            raise ValueError(
                "frame_embeds skip the pixels, so they cannot carry the visual prompt: use pixel_values_videos, or a "
                "config with use_visual_prompt=False."
            )
        else:
            self._check_frame_embeds(frame_embeds)
        frozen_video_embeds = self._frozen_video_embeds(frame_embeds, pixel_values_videos=pixel_values_videos)
        return self._classify(frame_embeds, text_embeds, frozen_video_embeds, labels, tower)

    def _check_frame_embeds(self, frame_embeds: torch.Tensor) -> None:
        if frame_embeds.dim() != 3 or frame_embeds.shape[-1] != self.config.projection_dim:
            raise ValueError(
                f"frame_embeds must be (batch, frames, {self.config.projection_dim}), got {tuple(frame_embeds.shape)}."
            )

    def _frozen_video_embeds(
        self,
        frame_embeds: torch.Tensor,
        pixel_values_videos: torch.Tensor | None = None,
        frozen_frame_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The frozen CLIP's clip features `(B, D)` that the prototype head reads in its frozen space (None for every
        other head): from the frozen frame features when given, from the pixels when the frames carry the visual
        prompt, else from `frame_embeds` `(B, T, D)` themselves (without the prompt they are the frozen ones)."""
        if not (self.config.inference_logits == "prototypes" and self.config.prototype_space == "frozen"):
            return None
        if frozen_frame_embeds is not None:
            return frozen_frame_mean(frozen_frame_embeds.to(self.visual_projection.weight.dtype))
        if self.config.use_visual_prompt and pixel_values_videos is not None:
            return self.frozen_video_embeds(pixel_values_videos)
        return frozen_frame_mean(frame_embeds.to(self.visual_projection.weight.dtype))

    def _classify(
        self,
        frame_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        frozen_video_embeds: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        tower: BaseModelOutputWithPooling | None = None,
    ) -> HESPVideoClassifierOutput:
        """The head on frame features `(B, T, D)`: temporal pooling, the known-class logits of
        `config.inference_logits` (the frozen clip features `(B, D)` for the prototype head's frozen space), the
        unknown column, and the open-set loss when `labels` are given."""
        batch = frame_embeds.shape[0]
        frame_embeds = frame_embeds.to(self.visual_projection.weight.dtype)
        video_embeds, frame_weights = self.temporal_pooling(frame_embeds, text_embeds)  # (B, D), (B, T)

        clip_logits = self.scaled_cosine(video_embeds, text_embeds)  # (B, K)
        negative_visual, recip_logits, known_logits = None, None, clip_logits
        if self.config.use_reciprocal_points:
            negative_visual = self.negative_visual_embeds()  # (K, D)
            recip_logits = reciprocal_logits(
                video_embeds, negative_visual.to(video_embeds.dtype), self.config.reciprocal_distance
            )  # (B, K)
            if self.config.inference_logits == "ensemble":
                known_logits = ensemble_logits(clip_logits, recip_logits)
        if self.config.inference_logits == "prototypes":
            known_logits = self.prototype_logits(video_embeds if frozen_video_embeds is None else frozen_video_embeds)
        open_set_score, logits = self.open_set_logits(known_logits)  # (B,), (B, K + 1)

        loss, loss_terms = None, None
        if labels is not None:
            if self.config.inference_only:
                raise ValueError(
                    "This is an inference-only HESP model (config.inference_only=True: no text tower, prompt contexts "
                    "or negative prompt images), so it cannot compute the training loss: call it without labels, or "
                    "load the full checkpoint to train or fine-tune."
                )
            labels = self._check_labels(labels, batch)
            loss, loss_terms = self.open_set_loss(
                labels=labels,
                clip_logits=clip_logits,
                reciprocal_logits=recip_logits,
                video_embeds=video_embeds,
                negative_visual_embeds=negative_visual,
                negative_text_embeds=self.negative_text_embeds()
                if self.config.negative_clip_weight > 0 and self.config.use_reciprocal_points
                else None,
                logit_scale=self.logit_scale.exp(),
                radius=self.reciprocal_points.radius,
            )

        return HESPVideoClassifierOutput(
            loss=loss,
            logits=logits,
            open_set_score=open_set_score,
            clip_logits=clip_logits,
            reciprocal_logits=recip_logits,
            video_embeds=video_embeds,
            frame_weights=frame_weights,
            text_embeds=text_embeds,
            negative_visual_embeds=negative_visual,
            loss_terms=loss_terms,
            # The tower's own tuples (an attention implementation without weights gives an empty one: None).
            hidden_states=(tower.hidden_states or None) if tower is not None else None,
            attentions=(tower.attentions or None) if tower is not None else None,
        )

    # ------------------------------------------------------------------------------- long recordings: shared frames
    def needs_frozen_frames(self) -> bool:
        """Whether the head also reads the frozen CLIP's own frame features (the prototype head in the frozen space
        of a model whose frames carry the visual prompt)."""
        config = self.config
        return (
            config.inference_logits == "prototypes" and config.prototype_space == "frozen" and config.use_visual_prompt
        )

    @torch.no_grad()
    def frame_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-frame features of normalised frames `(N, C, H, W)`: the vision tower's `(N, D)` with the visual prompt
        added, and the frozen CLIP's `(N, D)` when `needs_frozen_frames()` (else None).

        A frame's features depend on that frame alone (the prompt sits at a fixed centre or where that frame's own
        saliency puts it), so overlapping windows of a long recording can share them: `classify_frame_features` on
        windows of these rows gives the logits `forward` gives on the same frames, at one tower pass per frame."""
        if frames.dim() != 4:
            raise ValueError(f"frames must be (frames, channels, height, width), got {tuple(frames.shape)}.")
        prompted = self.encode_frames(frames[None], self.class_text_embeds()).pooler_output[0]
        frozen = (
            self.image_embeds(frames.to(self.visual_projection.weight.dtype)) if self.needs_frozen_frames() else None
        )
        return prompted, frozen

    @torch.no_grad()
    def classify_frame_features(
        self, frame_embeds: torch.Tensor, frozen_frame_embeds: torch.Tensor | None = None
    ) -> HESPVideoClassifierOutput:
        """The model's output for windows `(B, T, D)` of `frame_features` rows (`frozen_frame_embeds` likewise,
        needed when `needs_frozen_frames()`): the same as `forward` on those frames' pixels."""
        self._check_frame_embeds(frame_embeds)
        if self.needs_frozen_frames() and frozen_frame_embeds is None:
            raise ValueError("This model's prototype head reads the frozen frame features: pass frozen_frame_embeds.")
        frozen_video_embeds = self._frozen_video_embeds(frame_embeds, frozen_frame_embeds=frozen_frame_embeds)
        return self._classify(frame_embeds, self.class_text_embeds(), frozen_video_embeds)

    def frozen_video_embeds(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """`(B, D)`: the frozen CLIP's clip feature of normalised frames `(B, T, C, H, W)`: every frame through the
        image tower as CLIP has it (no visual prompt), L2-normalised, averaged over the frames."""
        batch, frames = pixel_values_videos.shape[:2]
        pixels = pixel_values_videos.to(self.visual_projection.weight.dtype).flatten(0, 1)
        return frozen_frame_mean(self.image_embeds(pixels).view(batch, frames, -1))

    def prototype_logits(self, video_embeds: torch.Tensor) -> torch.Tensor:
        """`(B, K)`: the cosine of each clip's video embedding with each class prototype, times CLIP's logit scale;
        the nearest prototype is the predicted class and its similarity the known-ness (with `max_logit`)."""
        return self.scaled_cosine(video_embeds, self.class_prototypes)

    def scaled_cosine(self, embeds: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """`(B, N)`: CLIP's logit scale times the cosine of each of `embeds` `(B, D)` with each of `references`
        `(N, D)`; the one form of the head's logits (class prompts, prototypes, candidate texts)."""
        references = F.normalize(references.to(embeds.dtype), dim=-1)
        return self.logit_scale.exp() * F.normalize(embeds, dim=-1) @ references.T

    @torch.no_grad()
    def set_class_prototypes(self, video_embeds: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit the prototype head: each known class's prototype is the normalised mean of the L2-normalised
        `video_embeds` `(N, D)` of its clips (`labels` `(N,)`, known-class indices). Every known class needs at
        least one clip. The head predicts once `config.inference_logits = "prototypes"`."""
        labels = torch.as_tensor(labels, device=self.class_prototypes.device).long().view(-1)
        embeds = F.normalize(torch.as_tensor(video_embeds).to(self.class_prototypes), dim=-1)
        num_known = self.config.num_known_labels
        if embeds.dim() != 2 or embeds.shape != (labels.numel(), self.config.projection_dim):
            raise ValueError(
                f"video_embeds must be (N, {self.config.projection_dim}) with one label each, got "
                f"{tuple(embeds.shape)} for {labels.numel()} labels."
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_known):
            raise ValueError(f"Prototype labels must be known-class indices 0..{num_known - 1}.")
        counts = torch.bincount(labels, minlength=num_known)
        missing = [self.config.id2label[k] for k in range(num_known) if counts[k] == 0]
        if missing:
            raise ValueError(f"No clip of the known class(es) {', '.join(missing)} to fit their prototypes from.")
        sums = torch.zeros_like(self.class_prototypes).index_add_(0, labels, embeds)
        self.class_prototypes.copy_(F.normalize(sums / counts[:, None], dim=-1))

    def open_set_logits(self, known_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The known-ness score `(B,)` and the output logits `(B, K + 1)` of the `K` known-class logits: those, then
        the "unknown" column, all divided by `config.probability_temperature`."""
        score, unknown = self.unknown_column(known_logits)  # (B,), (B, 1)
        logits = torch.cat([known_logits, unknown], dim=-1)
        temperature = self.config.probability_temperature
        if temperature != 1.0:  # calibrated: every column divided, so the arg-max (the decision) stays the same and
            logits = logits / temperature  # the softmax over the known columns is the calibrated probabilities
        return score, self.settle_unknown_column(logits, score)

    def unknown_column(self, known_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The known-ness score `(B,)` of the `K` known-class logits and the "unknown" logit `(B, 1)` that wins the
        arg-max when the score falls below `config.unknown_threshold` (exactly so once `settle_unknown_column` has
        undone the rounding, as `open_set_logits` does).

        `max_logit`: the column is the threshold itself. `max_softmax`: it is `max_e + log(threshold) - log(score)`,
        which exceeds the best known logit `max_e` exactly when `score < threshold`.
        """
        threshold = self.config.unknown_threshold
        best = known_logits.amax(dim=-1)  # (B,)
        if self.config.open_set_score == "max_softmax":
            log_score = known_logits.log_softmax(dim=-1).amax(dim=-1)  # (B,) log of the max known-class probability
            score = log_score.exp()
            column = None if threshold is None else best + math.log(threshold) - log_score
        else:
            score = best
            column = None if threshold is None else torch.full_like(best, float(threshold))
        if column is None:  # not calibrated: "unknown" is never the top label
            column = torch.full_like(best, torch.finfo(known_logits.dtype).min)
        return score, column[:, None]

    def settle_unknown_column(self, logits: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """`logits` `(B, K + 1)` with the "unknown" column moved, where rounding left it on the wrong side of the best
        known logit, one step past it: the arg-max is then "unknown" exactly when `score < config.unknown_threshold`,
        compared in float64 as `hesp_hf.inference.decisions` compares them.

        Why: the column is computed in the logits' dtype. A `max_softmax` score just below its threshold gives a
        column that differs from the best known logit by less than that logit's rounding step (a tie the arg-max
        hands to the known class), and dividing by the temperature can merge a `max_logit` threshold with a logit one
        step below it. Elsewhere the column keeps its value (the pipeline's softmax reads it)."""
        threshold = self.config.unknown_threshold
        if threshold is None:
            return logits
        known, column = logits[:, :-1], logits[:, -1]
        best = known.amax(dim=-1)  # (B,)
        finfo = torch.finfo(logits.dtype)
        step = best.abs() * finfo.eps + finfo.tiny  # >= one rounding step of `best`, also where `best` is 0
        is_known = score.double() >= threshold
        column = torch.where(is_known, torch.minimum(column, best - step), torch.maximum(column, best + step))
        return torch.cat([known, column[:, None]], dim=-1)

    def _check_labels(self, labels: torch.Tensor, batch: int) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=self.logit_scale.device).long().view(-1)
        num_known = self.config.num_known_labels
        if labels.numel() != batch:
            raise ValueError(f"labels holds {labels.numel()} values for a batch of {batch} clips.")
        if torch.compiler.is_compiling():
            return labels  # a check on the values would break the compiled graph; eager runs check them
        bad = (labels != UNKNOWN_LABEL_ID) & ((labels < 0) | (labels >= num_known))
        if bad.any():
            raise ValueError(
                f"labels must be known-class indices in 0..{num_known - 1} ({self.config.known_labels}) or "
                f"{UNKNOWN_LABEL_ID} for an unknown clip; got {sorted(set(labels[bad].tolist()))}."
            )
        return labels

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_clip(
        cls,
        pretrained_model_name_or_path: str,
        labels: Sequence[str],
        *,
        tokenizer: Any = None,
        dtype: torch.dtype | str | None = None,
        **config_overrides: Any,
    ) -> "HESPForOpenSetVideoClassification":
        """HESP on the towers of an HF CLIP checkpoint (Hub id or local folder) for the known `labels`, in label order.

        The CLIP weights load 1:1; only HESP's own parameters are new. The checkpoint's tokenizer (or `tokenizer`)
        turns the prompts into token ids once; they are stored in the config. `config_overrides` set any
        [`HESPConfig`] field (e.g. `num_frames=8`, `temporal_pooling="attention"`).
        """
        from transformers import AutoTokenizer

        clip_config = CLIPConfig.from_pretrained(pretrained_model_name_or_path)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path)
        config = HESPConfig.from_clip_config(clip_config, list(labels), tokenizer, **config_overrides)
        # HESP's own modules are declared expected-missing (`_keys_to_ignore_on_load_missing`): what is still missing
        # or unexpected here is a CLIP weight that does not fit.
        model, info = cls.from_pretrained(
            pretrained_model_name_or_path, config=config, dtype=dtype, output_loading_info=True
        )
        logger.info("HESP on the CLIP of %s: its prompts and modules start fresh.", pretrained_model_name_or_path)
        missing = sorted(info["missing_keys"])
        unexpected = sorted(key for key in info["unexpected_keys"] if not key.endswith("position_ids"))
        if missing or unexpected:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a CLIP checkpoint HESP can load 1:1: missing CLIP weights "
                f"{missing[:10]}, unexpected weights {unexpected[:10]}."
            )
        return model


__all__ = ["HESPForOpenSetVideoClassification", "HESPPreTrainedModel", "HESPVideoClassifierOutput"]
