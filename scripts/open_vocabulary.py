"""Naming expressions from text on the synthetic protocol: for each trained run of `scripts/quality.py` (same
`--known` / `--random_known`, data seeds and training seeds), how well candidate texts name the test clips.

    python scripts/quality.py --train_seeds 0 --ablation_seeds --recipes hesp-hf [--known ...]   # the runs, first
    python scripts/open_vocabulary.py [--known ... | --random_known SEED] [--data_seeds 0 1 2] [--train_seeds 0]

Two measures per run, on the test clips of all 11 classes:
- naming: for the clips of the classes the model does not know, top-1 accuracy among those classes' candidates
  (chance 1/5 with 5 unknown classes): what `hesp-predict`'s `closest_expression` reports;
- zero-shot: accuracy over all 11 classes' candidates (chance 1/11), the `zero-shot-video-classification` pipeline.
Rows: the package's way (facial-action descriptions of `hesp_hf.data.descriptions` against the trained video
embedding), the plain template "a face showing {name}", the descriptions with the classes' mean learned context put
before them (CoOp's context applied to new texts), and the descriptions against the frozen CLIP's frame-mean
feature. The open-set decision is not touched: known-class accuracy and AUROC are the run's own (`metrics.json`).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
from hesp_hf.data import ClipTransform, read_annotation
from hesp_hf.data.descriptions import DESCRIPTIONS
from hesp_hf.data.features import frozen_clip_features
from hesp_hf.data.presets import get_preset
from hesp_hf.embedded import embedded_clip_fingerprint, embedded_clip_path
from hesp_hf.embedded.protocol import add_protocol_arguments, protocol_split
from hesp_hf.embedded.synthetic import CLASSES, SyntheticSpec, write_synthetic_dataset
from hesp_hf.evaluation import markdown_table, mean_std
from hesp_hf.inference.zero_shot import token_ids


ROWS = {
    "descriptions, trained video embedding (the package's)": ("descriptions", False, "trained"),
    'plain template "a face showing {name}", trained video embedding': ("template", False, "trained"),
    "descriptions with the mean learned context, trained video embedding": ("descriptions", True, "trained"),
    "descriptions, frozen frame-mean feature": ("descriptions", False, "frozen"),
}
TEXTS = {
    "descriptions": [DESCRIPTIONS[name] for name in CLASSES],
    "template": [f"a face showing {name}" for name in CLASSES],
}


def clip_embeddings(run: Path, data: Path) -> tuple[HESPForOpenSetVideoClassification, dict, np.ndarray]:
    """The run's model and, for every test clip, its trained video embedding and frozen frame-mean feature."""
    model = HESPForOpenSetVideoClassification.from_pretrained(run).eval()
    transform = ClipTransform(HESPVideoProcessor.from_pretrained(run), training=False)
    records = read_annotation(data / "test.csv", get_preset("custom", list(CLASSES)))
    trained, frozen = [], []
    for start in range(0, len(records), 32):
        chunk = records[start : start + 32]
        batch = transform({"video": [r.path for r in chunk], "label": [0] * len(chunk)})
        pixels = torch.stack(batch["pixel_values_videos"])
        with torch.no_grad():
            trained.append(model(pixel_values_videos=pixels).video_embeds)
        frozen.append(frozen_clip_features(model, pixels))
    labels = np.array([record.label for record in records])
    return model, {"trained": torch.cat(trained), "frozen": torch.cat(frozen)}, labels


def run_scores(run: Path, data: Path) -> dict[str, dict[str, float]]:
    model, features, labels = clip_embeddings(run, data)
    tokenizer = AutoTokenizer.from_pretrained(
        run if (run / "tokenizer_config.json").exists() else embedded_clip_path()
    )
    limit = model.config.text_config.max_position_embeddings
    known = set(model.config.known_labels)
    unknown = np.array([i for i, name in enumerate(CLASSES) if name not in known])
    of_unknown = np.isin(labels, unknown)
    scores = {}
    for row, (texts, context, feature) in ROWS.items():
        text_embeds = model.candidate_text_embeds(token_ids(tokenizer, TEXTS[texts], limit), learned_context=context)
        logits = model.candidate_logits(features[feature], text_embeds).numpy()
        naming = unknown[logits[of_unknown][:, unknown].argmax(axis=1)] == labels[of_unknown]
        scores[row] = {"naming": float(naming.mean()), "zero_shot": float((logits.argmax(axis=1) == labels).mean())}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_arguments(parser, "outputs/quality")
    parser.set_defaults(train_seeds=[0])
    parser.add_argument("--epochs_tag", default="12epochs-v4", help="the run folders' suffix (scripts/quality.py)")
    args = parser.parse_args()
    known, root = protocol_split(parser, args)
    torch.set_num_threads(1)
    results: dict[str, list[dict[str, float]]] = {row: [] for row in ROWS}
    per_seed: dict[str, list[str]] = {row: [] for row in ROWS}
    for data_seed in args.data_seeds:
        data = write_synthetic_dataset(
            args.data_dir, SyntheticSpec(train_per_class=args.train_per_class, seed=data_seed)
        )
        for seed in args.train_seeds:
            run = (
                root
                / f"{data.name}-clip-{embedded_clip_fingerprint()}"
                / f"hesp-hf-{args.epochs_tag}"
                / f"seed-{seed}"
            )
            if not (run / "metrics.json").exists():
                parser.error(f"{run} holds no finished run: make it with scripts/quality.py first (see --help).")
            for row, values in run_scores(run, data).items():
                results[row].append(values)
                per_seed[row].append(f"{values['naming']:.3f} / {values['zero_shot']:.3f}")
    header = [
        "candidates",
        "naming among the unknown classes",
        "zero-shot over 11 classes",
        "per run: naming / 11-way",
    ]
    table = [
        [
            row,
            mean_std([v["naming"] for v in values], 3),
            mean_std([v["zero_shot"] for v in values], 3),
            ", ".join(per_seed[row]),
        ]
        for row, values in results.items()
    ]
    print(f"Known: {', '.join(known)}; data seeds {args.data_seeds}, training seeds {args.train_seeds}.")
    print(markdown_table(header, table))
    (root / "open-vocabulary.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
