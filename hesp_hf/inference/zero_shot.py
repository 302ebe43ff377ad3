"""Naming expressions from text: zero-shot scores of a trained HESP model over any list of expression names or
descriptions, the `zero-shot-video-classification` pipeline, and the closest description of a clip decided unknown.

A name that the description table knows (`hesp_hf.data.descriptions`: "contempt", "happy", ...) is read as its
facial actions ("one lip corner raised"): the text tower was trained on image-text pairs, and descriptions of facial
actions place expressions where bare emotion names do not ([docs/open-vocabulary.md]). Candidates are compared with
the model's trained video embedding (`video_embeds`), plain text with no learned context: the classes' learned
contexts, averaged and put before new texts, measured worse (docs).
"""

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers.pipelines.video_classification import VideoClassificationPipeline

from ..data.descriptions import DESCRIPTIONS, descriptions_except, expression_of
from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification


logger = logging.getLogger(__name__)

TASK = "zero-shot-video-classification"


def check_candidates(candidate_labels: Any) -> list[str]:
    """The candidate labels as a list of distinct, non-empty strings; anything else is one clear error."""
    if isinstance(candidate_labels, str):
        candidate_labels = [candidate_labels]
    if not isinstance(candidate_labels, Sequence) or not candidate_labels:
        raise ValueError("candidate_labels must be a non-empty list of expression names or descriptions.")
    bad = [label for label in candidate_labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise ValueError(f"candidate_labels must be non-empty strings; got {bad!r}.")
    seen, duplicates = set(), []
    for label in candidate_labels:
        key = label.strip().lower()
        if key in seen:
            duplicates.append(label)
        seen.add(key)
    if duplicates:
        raise ValueError(f"candidate_labels holds duplicates: {duplicates!r}.")
    return [label.strip() for label in candidate_labels]


def candidate_texts(
    candidate_labels: Sequence[str], hypothesis_template: str = "{}", use_descriptions: bool = True
) -> list[str]:
    """The text each candidate is scored by: its facial-action description when `use_descriptions` and the table
    knows the name, else the label itself; put into `hypothesis_template` (which must hold one `{}`)."""
    if hypothesis_template.count("{}") != 1:
        raise ValueError(f"hypothesis_template must hold exactly one '{{}}', got {hypothesis_template!r}.")
    texts = []
    for label in check_candidates(candidate_labels):
        expression = expression_of(label) if use_descriptions else None
        texts.append(hypothesis_template.format(DESCRIPTIONS[expression] if expression else label))
    return texts


def token_ids(tokenizer: Any, texts: Sequence[str], limit: int) -> list[list[int]]:
    """CLIP token ids of each text (`[SOS] ... [EOS]`), a text longer than the text tower's `limit` positions cut to
    fit (its EOS kept) with a warning that names it."""
    found = []
    for text in texts:
        ids = list(tokenizer(text)["input_ids"])
        if len(ids) > limit:
            logger.warning(
                "Candidate text %r takes %d tokens, more than the text tower's %d: truncated to %d.",
                text,
                len(ids),
                limit,
                limit,
            )
            ids = [*ids[: limit - 1], ids[-1]]
        found.append(ids)
    return found


class CandidateScorer:
    """Zero-shot logits of a HESP model over candidate texts, their features cached per list of texts."""

    def __init__(self, model: HESPForOpenSetVideoClassification, tokenizer: Any):
        if model.config.inference_only:
            raise ValueError(
                "An inference-only HESP model has no text tower to read candidate texts: use the full checkpoint."
            )
        self.model = model
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        key = tuple(texts)
        if key not in self._cache:
            limit = self.model.config.text_config.max_position_embeddings
            self._cache[key] = self.model.candidate_text_embeds(token_ids(self.tokenizer, texts, limit))
        return self._cache[key]

    def logits(self, video_embeds: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """`(B, N)` logits of the clips' video embeddings against the texts."""
        text_embeds = self.text_embeds(texts)
        return self.model.candidate_logits(video_embeds.to(text_embeds.dtype), text_embeds)

    def closest_unknown(self, video_embeds: torch.Tensor) -> list[tuple[str, str, float]]:
        """For each clip: the description table's expression outside the model's known classes whose description
        lies closest, that description, and its probability among those candidates."""
        candidates = descriptions_except(self.model.config.known_labels)
        if not candidates:
            return []
        names, texts = list(candidates), list(candidates.values())
        probabilities = self.logits(video_embeds, texts).float().softmax(dim=-1)
        best, index = probabilities.max(dim=-1)
        return [(names[i], texts[i], float(p)) for i, p in zip(index.tolist(), best.tolist(), strict=True)]


class HESPZeroShotVideoClassificationPipeline(VideoClassificationPipeline):
    """`pipeline("zero-shot-video-classification", model=checkpoint)(video, candidate_labels=[...])`: the candidates
    ranked by a trained HESP model's video embedding against their texts, as transformers' zero-shot pipelines do
    (`candidate_labels`, `hypothesis_template`; `use_descriptions=False` scores the labels as written). Needs the
    checkpoint's tokenizer (training saves it beside the model)."""

    _load_tokenizer = True

    def _sanitize_parameters(
        self,
        candidate_labels: Any = None,
        hypothesis_template: str = "{}",
        use_descriptions: bool = True,
        num_frames: int | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        if kwargs:
            raise TypeError(f"Unexpected zero-shot options {sorted(kwargs)}.")
        preprocess = {"num_frames": num_frames} if num_frames is not None else {}
        forward: dict[str, Any] = {}
        if candidate_labels is not None:
            labels = check_candidates(candidate_labels)
            forward = {"labels": labels, "texts": candidate_texts(labels, hypothesis_template, use_descriptions)}
        return preprocess, forward, {}

    def _forward(self, model_inputs: dict, labels: list[str] | None = None, texts: list[str] | None = None) -> dict:
        if labels is None:
            raise ValueError("Pass candidate_labels=[...]: the expression names or descriptions to rank.")
        if self.tokenizer is None:
            raise ValueError(
                "This checkpoint has no tokenizer to read candidate texts: save the CLIP backbone's tokenizer into it "
                "(AutoTokenizer.from_pretrained(clip).save_pretrained(checkpoint)); training does."
            )
        if getattr(self, "_scorer", None) is None:
            self._scorer = CandidateScorer(self.model, self.tokenizer)
        outputs = self.model(**model_inputs)
        return {"logits": self._scorer.logits(outputs.video_embeds, texts), "labels": labels}

    def postprocess(self, model_outputs: dict) -> list[dict[str, Any]]:
        probabilities = model_outputs["logits"][0].float().softmax(dim=-1)
        order = probabilities.argsort(descending=True).tolist()
        return [{"label": model_outputs["labels"][i], "score": float(probabilities[i])} for i in order]


def register_pipeline() -> None:
    """Make `pipeline("zero-shot-video-classification", model=...)` build [`HESPZeroShotVideoClassificationPipeline`]."""
    from transformers import AutoModelForVideoClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK,
            pipeline_class=HESPZeroShotVideoClassificationPipeline,
            pt_model=AutoModelForVideoClassification,
            type="multimodal",
        )


__all__ = ["CandidateScorer", "HESPZeroShotVideoClassificationPipeline", "candidate_texts", "register_pipeline"]
