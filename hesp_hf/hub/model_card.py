"""Model cards for trained HESP checkpoints, rendered from `model_cards/hesp_model_card.md` (installed as
`hesp_hf.model_cards`), with the YAML front matter the Hub reads (`model-index` holds ACC / AUROC / OSCR)."""

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..atomic_files import write_text_atomic
from ..modeling.provenance_hesp import BUILD_INFO_NAME


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name


def known_ness_description(config: Any) -> str:
    """The known-ness score of a `HESPConfig` in words, e.g. "the maximum logit of the CLIP branch"."""
    if config.inference_logits == "prototypes":
        space = (
            "the clip's trained video embedding"
            if config.prototype_space == "trained"
            else "the clip's frozen CLIP feature (frame mean; the trained embedding classified the training clips worse)"
        )
        logits = (
            f"the prototype head (cosine similarity of {space} to each class prototype, the mean of that class's "
            "training clips, times CLIP's logit scale)"
        )
        if config.open_set_score == "max_softmax":
            return f"the maximum softmax probability over the known classes of {logits}"
        return f"the similarity to the nearest class prototype: the maximum logit of {logits}"
    if not config.use_reciprocal_points or config.inference_logits == "clip":
        logits = "the CLIP branch (learned text prompts)"
    else:
        distance = {"l2": "RPL's distance ||v - p||^2 / D", "arpl": "ARPL's distance d_l2 - d_dot, as in the paper"}
        logits = (
            "the ensemble of the CLIP and reciprocal-point branches (reciprocal logits: "
            f"{distance[config.reciprocal_distance]})"
        )
    if config.open_set_score == "max_softmax":
        return f"the maximum softmax probability over the known classes of {logits}"
    return f"the maximum logit of {logits}"


@dataclass(frozen=True)
class BackboneInfo:
    """What the card says about the CLIP a model was built on: `hub_id` for the `base_model` field (None when it
    cannot be named: a local folder with no Hub origin), a description for the text, and whether its training data
    was synthetic (the embedded tiny CLIP) rather than web-scale image-text pairs."""

    hub_id: str | None
    description: str
    synthetic: bool


def describe_backbone(clip_model: str) -> BackboneInfo:
    """`clip_model` as passed to training: a Hub id, a local folder (its `config.json` may record the Hub id it came
    from as `_name_or_path`), or a folder whose `build_info.json` describes the backbone itself (`description`,
    `synthetic_pretraining`), as the embedded tiny CLIP's does."""
    path = Path(clip_model)
    try:
        built = json.loads((path / BUILD_INFO_NAME).read_text())
    except (OSError, ValueError):
        built = None
    if isinstance(built, dict) and isinstance(built.get("description"), str):
        return BackboneInfo(None, built["description"], bool(built.get("synthetic_pretraining")))
    if not path.exists():
        return BackboneInfo(clip_model, f"`{clip_model}`", False)
    origin = None
    try:
        origin = json.loads((path / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError):
        pass
    if isinstance(origin, str) and HUB_ID.fullmatch(origin) and not Path(origin).exists():
        return BackboneInfo(origin, f"`{origin}`", False)
    return BackboneInfo(None, f"a local CLIP checkpoint (`{path.name}`)", False)


@dataclass(frozen=True)
class HubDataset:
    """A Hub dataset a model was trained and tested on: its id, configuration and test split, for the card's YAML."""

    repo_id: str
    config: str | None
    split: str


def render_model_card(
    *,
    repo_id: str,
    backbone: BackboneInfo,
    dataset_name: str,
    data_description: str,
    synthetic_data: bool,
    known_labels: list[str],
    unknown_labels: list[str],
    metrics: dict[str, Any],
    split_description: str,
    training_summary: str,
    temporal_pooling: str,
    threshold: float | None,
    keep_share: float,
    known_ness: str,
    license: str = "apache-2.0",
    use_visual_prompt: bool = True,
    hub_dataset: "HubDataset | None" = None,
    calibration: str = "",
) -> ModelCard:
    """The card of a trained checkpoint. The YAML names only what the Hub can resolve: `base_model` when the CLIP's
    Hub id is known, `datasets` and the results' dataset only when the data came from a Hub dataset (`hub_dataset`:
    its id, config and test split); the text says what the data was."""
    results = [
        EvalResult(
            task_type="video-classification",
            task_name="Open-set video facial expression recognition",
            dataset_type=hub_dataset.repo_id if hub_dataset else dataset_name,
            dataset_name=hub_dataset.repo_id if hub_dataset else dataset_name,
            dataset_config=hub_dataset.config if hub_dataset else None,
            dataset_split=(
                f"{hub_dataset.split} ({split_description})" if hub_dataset else f"test ({split_description})"
            ),
            metric_type=name,
            metric_name=label,
            metric_value=round(float(metrics[name]), 6),
        )
        for name, label in (("accuracy", "ACC"), ("auroc", "AUROC"), ("oscr", "OSCR"))
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="video-classification",
        base_model=backbone.hub_id,
        datasets=[hub_dataset.repo_id] if hub_dataset else None,
        license=license,
        tags=["hesp", "open-set-recognition", "facial-expression-recognition", "clip", "video-classification"],
        model_name=repo_id,
        eval_results=results,
    )
    template = resources.files("hesp_hf.model_cards").joinpath("hesp_model_card.md").read_text()
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        backbone=backbone.description,
        synthetic_backbone=backbone.synthetic,
        dataset_name=dataset_name,
        data_description=data_description,
        synthetic_data=synthetic_data,
        known_labels=known_labels,
        unknown_labels=unknown_labels,
        metrics=metrics,
        split_description=split_description,
        training_summary=training_summary,
        temporal_pooling=temporal_pooling,
        threshold="not calibrated" if threshold is None else f"{threshold:.4f}",
        keep_share=f"{keep_share:.0%}",
        known_ness=known_ness,
        use_visual_prompt=use_visual_prompt,
        calibration=calibration,
    )


def write_model_card(card: ModelCard, output_dir: str | Path) -> Path:
    return write_text_atomic(Path(output_dir) / "README.md", str(card))
