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
"""HESP's open-set multi-task loss (paper Sec. 3, "Open-set Multi-task Learning Scheme").

Five config-weighted terms; the model owns every learnable tensor (the reciprocal radius included) and hands them in,
so the loss has no state and is never needed at inference. This file travels inside every checkpoint (remote code).
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_hesp import HESPConfig


def supervised_contrastive_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Supervised contrastive loss on L2-normalised `features` `(B, D)`, scaled by the temperature, over the clips
    where `valid` `(B,)` is true (all by default; the others take no part, as if not in the batch).

    For anchor i with positives P(i) = {j != i : y_j = y_i}:
    `l_i = -tau * mean_{j in P(i)} [ f_i.f_j / tau - log sum_{k != i} exp(f_i.f_k / tau) ]`, averaged over the anchors
    that have a positive. Zero (still attached to the graph) when no anchor has one. Masks rather than indexing, so
    that shapes do not depend on the labels (`torch.compile` traces it in one graph).
    """
    batch = features.shape[0]
    if batch < 2:
        return features.sum() * 0.0
    valid = torch.ones_like(labels, dtype=torch.bool) if valid is None else valid
    features = F.normalize(features, dim=-1)
    similarity = features @ features.T / temperature  # (B, B)
    self_mask = torch.eye(batch, dtype=torch.bool, device=features.device)
    left_out = self_mask | ~valid[None, :]
    # A large finite value rather than -inf: a row with nothing left stays finite (its anchor has no positive).
    log_denominator = torch.logsumexp(similarity.masked_fill(left_out, -1e9), dim=1, keepdim=True)
    log_prob = similarity - log_denominator  # (B, B)
    positives = (labels[:, None] == labels[None, :]) & ~left_out & valid[:, None]
    num_positives = positives.sum(dim=1)
    mean_log_prob = torch.where(positives, log_prob, 0.0).sum(dim=1) / num_positives.clamp(min=1)
    has_positive = num_positives > 0
    anchors = has_positive.sum().clamp(min=1)
    return -(temperature * torch.where(has_positive, mean_log_prob, 0.0)).sum() / anchors


def ensemble_logits(clip_logits: Any, reciprocal_logits: Any) -> Any:
    """The paper's ensemble of the two branches, their mean (tensors or arrays): the model's inference logits, the
    hybrid loss term's input, and the evaluation's "ensemble" row."""
    return (clip_logits + reciprocal_logits) / 2


def reciprocal_logits(video_embeds: torch.Tensor, reciprocal_points: torch.Tensor, distance: str) -> torch.Tensor:
    """Reciprocal-point logits `(B, K)`: the farther a clip is from class k's reciprocal point, the larger logit k.

    `d_l2 = ||v - p_k||^2 / D` is computed from norms and one matrix product rather than a `(B, K, D)` difference.
    - `"arpl"`: `d_l2 - v.p_k`, ARPL's distance (Chen et al., TPAMI 2021) and the paper's.
    - `"l2"`: `d_l2` alone, RPL's distance (Chen et al., ECCV 2020).
    """
    dim = video_embeds.shape[-1]
    dot = video_embeds @ reciprocal_points.T  # (B, K)
    squared_distance = (
        video_embeds.pow(2).sum(dim=-1, keepdim=True) + reciprocal_points.pow(2).sum(dim=-1)[None, :] - 2 * dot
    )
    if distance == "l2":
        return squared_distance / dim
    if distance == "arpl":
        return squared_distance / dim - dot
    raise ValueError(f"reciprocal distance must be 'arpl' or 'l2', got {distance!r}.")


class HESPOpenSetLoss(nn.Module):
    """`L = w1 L_KN(CE) + w2 L_KN(CL) + w3 L_NE(CLIP) + w4 L_NE(CE) + w5 L_H` (paper names; weights from the config).

    - `known_ce`, L_KN(CE): cross-entropy on the CLIP logits `s * cos(v, t_k)` of the learned class prompts.
    - `known_contrastive`, L_KN(CL): supervised contrastive loss on the video features.
    - `negative_clip`, L_NE(CLIP): CLIP loss aligning negative visual prompt k with "This video is not <class k>.".
    - `negative_ce`, L_NE(CE): ARPL loss on the reciprocal logits, plus the radius margin term.
    - `hybrid_ce`, L_H: cross-entropy on the ensemble logits `(clip + reciprocal) / 2`.
    """

    term_names = ("known_ce", "known_contrastive", "negative_clip", "negative_ce", "hybrid_ce")

    def __init__(self, config: HESPConfig):
        super().__init__()
        self.config = config

    def weights(self) -> dict[str, float]:
        config = self.config
        return {
            "known_ce": config.known_ce_weight,
            "known_contrastive": config.known_contrastive_weight,
            "negative_clip": config.negative_clip_weight,
            "negative_ce": config.negative_ce_weight,
            "hybrid_ce": config.hybrid_ce_weight,
        }

    def forward(
        self,
        labels: torch.Tensor,
        clip_logits: torch.Tensor,
        reciprocal_logits: torch.Tensor | None,
        video_embeds: torch.Tensor,
        negative_visual_embeds: torch.Tensor | None,
        negative_text_embeds: torch.Tensor | None,
        logit_scale: torch.Tensor,
        radius: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the weighted total and the unweighted value of each active term (a zero weight skips its term).

        Shapes: `labels (B,)` in `0..K-1`, or -1 for an unknown clip (left out of the label terms); `clip_logits`, `reciprocal_logits (B, K)`; `video_embeds (B, D)`;
        `negative_visual_embeds`, `negative_text_embeds (K, D)`; `logit_scale`, `radius` scalars.
        """
        config = self.config
        # Losses in float32 at least: bf16 cross-entropies and distances lose the small differences that train prompts.
        compute_dtype = torch.promote_types(clip_logits.dtype, torch.float32)
        # Unknown clips (label -1, evaluation data only) take no part in the label terms: they are masked out, not
        # indexed out, so that no shape depends on the labels; with no known clip every label term is 0.
        known = labels >= 0
        labels_or_0 = labels.clamp(min=0)
        known_count = known.sum().clamp(min=1)

        def known_mean(values: torch.Tensor) -> torch.Tensor:
            return torch.where(known, values, 0.0).sum() / known_count

        clip_logits = clip_logits.to(compute_dtype)
        terms: dict[str, torch.Tensor] = {}
        weights = self.weights()
        if reciprocal_logits is None:  # reciprocal points switched off: their three terms go with them
            weights = {name: w for name, w in weights.items() if name in ("known_ce", "known_contrastive")}
        else:
            reciprocal_logits = reciprocal_logits.to(compute_dtype)
        if weights.get("known_ce", 0) > 0:
            terms["known_ce"] = known_mean(F.cross_entropy(clip_logits, labels_or_0, reduction="none"))
        if weights.get("known_contrastive", 0) > 0:
            terms["known_contrastive"] = supervised_contrastive_loss(
                video_embeds.to(compute_dtype), labels, config.contrastive_temperature, valid=known
            )
        if weights.get("negative_clip", 0) > 0:
            if negative_text_embeds is None:
                raise ValueError("The negative_clip term needs the negative text embeddings.")
            negative_logits = (
                logit_scale.to(compute_dtype)
                * F.normalize(negative_visual_embeds.to(compute_dtype), dim=-1)
                @ F.normalize(negative_text_embeds.to(compute_dtype), dim=-1).T
            )  # (K, K): row j = negative visual prompt j against every negative text prompt
            targets = torch.arange(negative_logits.shape[0], device=negative_logits.device)
            terms["negative_clip"] = F.cross_entropy(negative_logits, targets)
        if weights.get("negative_ce", 0) > 0:
            reciprocal_ce = known_mean(
                F.cross_entropy(reciprocal_logits / config.reciprocal_temperature, labels_or_0, reduction="none")
            )
            own_points = negative_visual_embeds.to(compute_dtype)[labels_or_0]  # (B, D)
            distance_to_own = (video_embeds.to(compute_dtype) - own_points).pow(2).mean(dim=-1)  # (B,)
            margin = known_mean(F.relu(distance_to_own - radius.to(compute_dtype) + config.reciprocal_margin))
            terms["negative_ce"] = reciprocal_ce + config.reciprocal_margin_weight * margin
        if weights.get("hybrid_ce", 0) > 0:
            terms["hybrid_ce"] = known_mean(
                F.cross_entropy(ensemble_logits(clip_logits, reciprocal_logits), labels_or_0, reduction="none")
            )
        if not terms:
            raise ValueError("Every loss weight of the HESPConfig is 0: at least one term must be active.")
        total = sum(weights.get(name, 0.0) * value for name, value in terms.items())
        return total, terms


__all__ = ["HESPOpenSetLoss", "reciprocal_logits", "supervised_contrastive_loss"]
