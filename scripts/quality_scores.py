"""Which known-ness score should a trained HESP model report? Training-free scores on the frozen CLIP features against
HESP's own outputs and against scores on the trained model's `video_embeds`, on the synthetic protocol.

    python scripts/quality_scores.py [--known neutral,happiness,... | --random_known SEED] [--data_seeds 0 1 2]
        [--train_seeds 0] [--epochs 12] [--output_dir outputs/quality-scores]

Protocol: no clip of an unknown class reaches training, selection or calibration. HESP trains with the package's
synthetic recipe (`synthetic_training_options`, the last epoch kept) and `validation_unknown_fraction=0`; every bank,
prototype, covariance and standardisation below is built from the known classes' clips of `train.csv` alone, and
no setting is chosen on the test clips. The test clips of all 11 classes are scored: ACC on the known ones, AUROC
known vs unknown, OSCR.

Rows:
- frozen features (8 frames at segment centres, as the processor samples them; each frame's CLIP image feature
  L2-normalised, averaged over the frames): every scorer of `hesp_hf.evaluation.baselines.baseline_scores`;
- HESP as trained with the prompt ensemble predicting (`inference_logits="ensemble"`): its ensemble max-logit
  (the model's own score) and its CLIP branch's max-logit; candidate (a) is what the prototype head computes;
- on the trained model's `video_embeds` (the model in eval mode over the clips, as evaluation feeds them): nearest
  class prototype, kNN k = 1 / 5 / 10, 2 and 3 k-means prototypes per class, and fusions of a prompt-logit score with
  the prototype score, each standardised by its statistics on the known training clips; Mahalanobis on the
  L2-normalised embeds; (f) the trained and the frozen prototype scores fused the same way; (g) the trained or the
  frozen prototype, whichever classifies the known training clips better (leave-one-out).

Frozen features are cached per data set, the trained model's outputs per run (`outputs.npz` in the run folder) and
a finished training is reused, so an interrupted measurement resumes. Writes `scores-<split>.md` / `.json` under
`--output_dir` and prints the table with the command that made it.
"""

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import hesp_hf
from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
from hesp_hf.atomic_files import atomic_output, write_text_atomic
from hesp_hf.calibration import uncalibrated_logits
from hesp_hf.data import ClipTransform, read_annotation
from hesp_hf.data.decoding import sample_clip
from hesp_hf.data.presets import get_preset
from hesp_hf.embedded import DEMO_KNOWN, embedded_clip_fingerprint, embedded_clip_path, synthetic_training_options
from hesp_hf.embedded.synthetic import CLASSES, SyntheticSpec, write_synthetic_dataset
from hesp_hf.evaluation import markdown_table
from hesp_hf.evaluation.baselines import (
    OpenSetScores,
    baseline_scores,
    knn_scores,
    l2_normalize,
    logit_scores,
    mahalanobis_scores,
    metrics_of,
    multi_prototype_scores,
    prototype_scores,
    standardized_fusion,
)


NUM_FRAMES = 8
NUM_KNOWN = 6
BASELINE_PREFIX = "frozen: "


# ------------------------------------------------------------------------------------------------------ data
def clip_records(data: Path) -> dict[str, list]:
    """The clips of `train.csv` and `test.csv` (all classes; `label` is the index in `CLASSES`)."""
    preset = get_preset("custom", list(CLASSES))
    return {split: read_annotation(data / f"{split}.csv", preset) for split in ("train", "test")}


def frozen_features(data: Path, cache: Path) -> dict[str, np.ndarray]:
    """Per split of the data set, `(N, D)`: each clip's 8 segment-centre frames through the frozen CLIP image tower,
    each frame's feature L2-normalised, averaged over the frames (cached as `.npz`)."""
    target = cache / f"{data.name}-clip-{embedded_clip_fingerprint()}-frozen.npz"
    if target.exists():
        return dict(np.load(target))
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(embedded_clip_path()).eval()
    processor = HESPVideoProcessor.from_clip(embedded_clip_path(), num_frames=NUM_FRAMES)
    result = {}
    for split, records in clip_records(data).items():
        features = []
        for start in range(0, len(records), 32):
            videos = [sample_clip(r.path, NUM_FRAMES).frames for r in records[start : start + 32]]
            pixels = processor(videos, return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
            with torch.no_grad():
                frames = model.get_image_features(pixel_values=pixels.flatten(0, 1)).pooler_output
            features.append(F.normalize(frames, dim=-1).view(len(videos), NUM_FRAMES, -1).mean(dim=1))
        result[split] = torch.cat(features).numpy()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **result)
    return result


# ---------------------------------------------------------------------------------------------------- training
def train_run(data: Path, folder: Path, known: list[str], seed: int, epochs: float) -> float:
    """Train HESP once (reused when `metrics.json` exists); returns the training's wall-clock seconds (recorded in
    `timing.json`)."""
    timing = folder / "timing.json"
    if (folder / "metrics.json").exists() and timing.exists():
        return json.loads(timing.read_text())["train_seconds"]
    options = {
        **synthetic_training_options(data, folder, epochs, seed, known_labels=known),
        "validation_unknown_fraction": 0.0,  # no unknown clip in validation, selection or calibration
        "inference_logits": "ensemble",  # the model's own logits are the prompt ensemble; the candidates come after
        "eval_strategy": "no",
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        "overwrite_output_dir": True,
        "disable_tqdm": True,
    }
    folder.mkdir(parents=True, exist_ok=True)
    log = folder.parent / f"{folder.name}.log"
    start = time.perf_counter()
    with log.open("w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        handler = logging.StreamHandler(handle)
        logging.getLogger().addHandler(handler)
        try:
            hesp_hf.train(**options)
        finally:
            logging.getLogger().removeHandler(handler)
    seconds = time.perf_counter() - start
    write_text_atomic(timing, json.dumps({"train_seconds": seconds, "options": options}, indent=2, default=str))
    return seconds


def trained_outputs(folder: Path, data: Path) -> dict[str, np.ndarray]:
    """The trained model (eval mode) over every clip of `train.csv` and `test.csv` as evaluation feeds them
    (segment centres, the run's processor): per split `{split}_logits` (the model's `K` known logits),
    `{split}_clip_logits` and `{split}_embeds` (`video_embeds`). Cached as `outputs.npz` in the run folder."""
    target = folder / "outputs.npz"
    if target.exists():
        return dict(np.load(target))
    model = HESPForOpenSetVideoClassification.from_pretrained(folder).eval()
    transform = ClipTransform(HESPVideoProcessor.from_pretrained(folder), training=False)
    result: dict[str, np.ndarray] = {}
    for split, records in clip_records(data).items():
        parts: dict[str, list] = {"logits": [], "clip_logits": [], "embeds": []}
        for start in range(0, len(records), 32):
            chunk = records[start : start + 32]
            pixels = transform({"video": [r.path for r in chunk], "label": [0] * len(chunk)})["pixel_values_videos"]
            with torch.no_grad():
                output = model(pixel_values_videos=torch.stack(pixels))
            parts["logits"].append(torch.from_numpy(uncalibrated_logits(output.logits[:, :-1].numpy(), model.config)))
            parts["clip_logits"].append(output.clip_logits)
            parts["embeds"].append(output.video_embeds)
        for name, values in parts.items():
            result[f"{split}_{name}"] = torch.cat(values).numpy()
    with atomic_output(target) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **result)
    return result


# ------------------------------------------------------------------------------------------------------ scores
def trained_scores(outputs: dict[str, np.ndarray], train_known: np.ndarray, train_y: np.ndarray) -> dict:
    """HESP's own scores and the candidates on its `video_embeds`; banks from the known training clips only."""
    bank, test = outputs["train_embeds"][train_known], outputs["test_embeds"]
    own = logit_scores(outputs["test_logits"], "max_logit")
    clip = logit_scores(outputs["test_clip_logits"], "max_logit")
    proto = prototype_scores(bank, train_y, test)
    proto_train = prototype_scores(bank, train_y, bank)
    scores = {
        "HESP as trained: ensemble max-logit (the model's own score)": own,
        "HESP as trained: CLIP branch max-logit": clip,
        "trained embeds: (a) nearest class prototype (cosine)": proto,
    }
    for k in (1, 5, 10):
        scores[f"trained embeds: (b) kNN k={k} (prototype's class)"] = knn_scores(bank, test, k, proto.predictions)
    for per_class in (2, 3):
        scores[f"trained embeds: (c) {per_class} k-means prototypes per class"] = multi_prototype_scores(
            bank, train_y, test, per_class=per_class
        )
    scores["trained embeds: (e) Mahalanobis on L2-normalised embeds"] = mahalanobis_scores(
        bank, train_y, test, normalize=True
    )
    train_own = logit_scores(outputs["train_logits"][train_known], "max_logit").scores
    train_clip = logit_scores(outputs["train_clip_logits"][train_known], "max_logit").scores
    for name, test_logit, train_logit in (("ensemble", own, train_own), ("CLIP-branch", clip, train_clip)):
        fused = standardized_fusion([test_logit.scores, proto.scores], [train_logit, proto_train.scores])
        scores[f"trained embeds: (d) z({name} max-logit) + z(prototype), prototype's class"] = OpenSetScores(
            proto.predictions, fused
        )
    return scores


def split_scores(features: dict, outputs: dict, records: dict, known: list[str]) -> dict[str, OpenSetScores]:
    """Every row's scores on one run; the frozen baselines' and the model's classes both follow the model's label
    order (`known`, as `id2label`)."""
    index = {CLASSES.index(name): i for i, name in enumerate(known)}
    train_all = np.array([r.label for r in records["train"]])
    train_known = np.array([label in index for label in train_all])
    train_y = np.array([index[label] for label in train_all[train_known]])
    frozen = baseline_scores(features["train"][train_known], train_y, features["test"])
    scores = {BASELINE_PREFIX + name: value for name, value in frozen.items()}
    scores.update(trained_scores(outputs, train_known, train_y))
    scores.update(
        frozen_and_trained(
            features["train"][train_known],
            outputs["train_embeds"][train_known],
            train_y,
            features["test"],
            outputs["test_embeds"],
        )
    )
    return scores


def leave_one_out_prototype_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the nearest-prototype rule on the training clips, each clip left out of its own class mean."""
    unit = l2_normalize(features)
    sums = np.stack([unit[labels == c].sum(axis=0) for c in range(labels.max() + 1)])  # directions of the means
    correct = 0
    for feature, label in zip(unit, labels, strict=True):
        sums_without = sums.copy()
        sums_without[label] -= feature
        correct += int((l2_normalize(sums_without) @ feature).argmax() == label)
    return correct / len(labels)


def frozen_and_trained(
    frozen_bank: np.ndarray,
    trained_bank: np.ndarray,
    labels: np.ndarray,
    frozen_test: np.ndarray,
    trained_test: np.ndarray,
) -> dict[str, OpenSetScores]:
    """(f) the frozen and the trained prototype scores, each standardised on the training clips, summed (the trained
    prototype's class); (g) the trained prototype when its leave-one-out accuracy on the known training clips is at
    least the frozen one's, else the frozen prototype (a choice made on known training clips only)."""
    frozen, trained = (
        prototype_scores(frozen_bank, labels, frozen_test),
        prototype_scores(trained_bank, labels, trained_test),
    )
    fused = standardized_fusion(
        [trained.scores, frozen.scores],
        [
            prototype_scores(trained_bank, labels, trained_bank).scores,
            prototype_scores(frozen_bank, labels, frozen_bank).scores,
        ],
    )
    trained_accuracy = leave_one_out_prototype_accuracy(trained_bank, labels)
    frozen_accuracy = leave_one_out_prototype_accuracy(frozen_bank, labels)
    use_trained = trained_accuracy >= frozen_accuracy
    print(
        f"(g) leave-one-out prototype accuracy on the known training clips: trained {trained_accuracy:.3f}, frozen "
        f"{frozen_accuracy:.3f} -> {'trained' if use_trained else 'frozen'}",
        flush=True,
    )
    return {
        "trained embeds: (f) z(trained prototype) + z(frozen prototype), trained prototype's class": OpenSetScores(
            trained.predictions, fused
        ),
        "trained embeds: (g) trained or frozen prototype, whichever has the higher leave-one-out training accuracy": (
            trained if use_trained else frozen
        ),
    }


# ------------------------------------------------------------------------------------------------------ tables
def results_table(runs: dict[str, dict[int, list[dict]]], data_seeds: list[int]) -> tuple[str, str]:
    """Markdown: per row the mean ± std over data seeds (of the per-seed means over training seeds) of AUROC, OSCR
    and ACC, then each seed's AUROC / OSCR; and a check of the targets against the strongest frozen baseline."""

    def per_seed(name: str, metric: str) -> np.ndarray:
        return np.array([np.mean([run[metric] for run in runs[name][s]]) for s in data_seeds])

    def mean_std(values: np.ndarray) -> str:
        return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"

    header = ["score", "AUROC", "OSCR", "ACC", *(f"seed {s}: AUROC / OSCR" for s in data_seeds)]
    rows = []
    for name in runs:
        auroc, oscr, acc = (per_seed(name, m) for m in ("auroc", "oscr", "accuracy"))
        runs_text = []
        for s, a, o in zip(data_seeds, auroc, oscr, strict=True):
            single = (
                " (" + ", ".join(f"{r['auroc']:.3f}" for r in runs[name][s]) + ")" if len(runs[name][s]) > 1 else ""
            )
            runs_text.append(f"{a:.3f}{single} / {o:.3f}")
        rows.append([name, mean_std(auroc), mean_std(oscr), f"{acc.mean():.3f}", *runs_text])
    table = markdown_table(header, rows)

    baselines = [name for name in runs if name.startswith(BASELINE_PREFIX)]
    best = max(baselines, key=lambda name: per_seed(name, "auroc").mean())
    best_oscr = max(per_seed(name, "oscr").mean() for name in baselines)
    best_auroc = per_seed(best, "auroc")
    seed_best = np.max([per_seed(name, "auroc") for name in baselines], axis=0)
    check_rows = []
    for name in runs:
        if name in baselines:
            continue
        auroc, oscr = per_seed(name, "auroc"), per_seed(name, "oscr")
        margin = auroc.mean() - best_auroc.mean()
        worst = (auroc - best_auroc).min()
        worst_any = (auroc - seed_best).min()
        met = margin >= 0.02 and oscr.mean() >= best_oscr and worst >= -0.01
        check_rows.append(
            [
                name,
                f"{margin:+.3f}",
                f"{oscr.mean() - best_oscr:+.3f}",
                f"{worst:+.3f}",
                f"{worst_any:+.3f}",
                "**yes**" if met else "no",
            ]
        )
    checks = markdown_table(
        [
            "candidate",
            "mean AUROC − best baseline's",
            "mean OSCR − best baseline OSCR",
            "worst seed: AUROC − best baseline's",
            "worst seed: AUROC − best baseline of that seed",
            "targets met (+0.02 / ≥ OSCR / ≥ −0.01)",
        ],
        check_rows,
    )
    note = (
        f"\nStrongest frozen baseline by mean AUROC: {best} ({best_auroc.mean():.3f}; per seed "
        + " ".join(f"{v:.3f}" for v in best_auroc)
        + f"); best frozen-baseline mean OSCR {best_oscr:.3f}.\n"
    )
    return table, note + "\n" + checks


def main() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--known", default=",".join(DEMO_KNOWN), help="known classes, comma-separated")
    parser.add_argument(
        "--random_known", type=int, default=None, help=f"draw {NUM_KNOWN} known classes with this seed"
    )
    parser.add_argument("--data_seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train_seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--train_per_class", type=int, default=30)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/quality-scores"))
    parser.add_argument("--data_dir", type=Path, default=Path("outputs/synthetic"))
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    if args.random_known is not None:
        drawn = np.random.default_rng(args.random_known).choice(len(CLASSES), NUM_KNOWN, replace=False)
        known = [CLASSES[i] for i in sorted(drawn)]
        print(f"--random_known {args.random_known}: known = {','.join(known)}", flush=True)
    else:
        known = [name.strip() for name in args.known.split(",") if name.strip()]
        if any(name not in CLASSES for name in known) or len(set(known)) != len(known):
            parser.error(f"--known must name distinct classes of {CLASSES}")
    # The model's label order (`id2label`) is the classes' index order.
    known = sorted(known, key=CLASSES.index)
    split_name = "demo-split" if set(known) == set(DEMO_KNOWN) else "known-" + "-".join(known)
    root = args.output_dir / split_name

    runs: dict[str, dict[int, list[dict]]] = {}
    timings = []
    for data_seed in args.data_seeds:
        data = write_synthetic_dataset(
            args.data_dir, SyntheticSpec(train_per_class=args.train_per_class, seed=data_seed)
        )
        features = frozen_features(data, args.output_dir / "features")
        records = clip_records(data)
        index = {CLASSES.index(name): i for i, name in enumerate(known)}
        test_y = np.array([index.get(r.label, -1) for r in records["test"]])
        for train_seed in args.train_seeds:
            folder = (
                root
                / f"{data.name}-clip-{embedded_clip_fingerprint()}"
                / f"hesp-hf-{args.epochs:g}epochs-seed-{train_seed}"
            )
            seconds = train_run(data, folder, known, train_seed, args.epochs)
            timings.append(seconds)
            outputs = trained_outputs(folder, data)
            recorded = json.loads((folder / "metrics.json").read_text())
            config = json.loads((folder / "config.json").read_text())
            labels = [config["id2label"][str(i)] for i in range(len(known))]
            if labels != known:
                raise RuntimeError(f"{folder}: the model's label order {labels} is not {known}.")
            scores = split_scores(features, outputs, records, known)
            metrics = metrics_of(scores, test_y, len(known))
            own = metrics["HESP as trained: ensemble max-logit (the model's own score)"]
            if abs(own["auroc"] - recorded["auroc"]) > 1e-3:  # the extraction must see what evaluation saw
                print(f"WARNING {folder}: re-scored AUROC {own['auroc']:.4f}, metrics.json {recorded['auroc']:.4f}")
            write_text_atomic(folder / "scores.json", json.dumps(metrics, indent=2))
            for name, values in metrics.items():
                runs.setdefault(name, {}).setdefault(data_seed, []).append(values)
            print(
                f"data seed {data_seed}, training seed {train_seed}: trained in {seconds:.0f} s; own AUROC "
                f"{own['auroc']:.3f}, trained prototype "
                f"{metrics['trained embeds: (a) nearest class prototype (cosine)']['auroc']:.3f}",
                flush=True,
            )
    table, checks = results_table(runs, args.data_seeds)
    text = (
        f"## Known: {', '.join(known)}\n\n`{command}`\n\nData seeds {args.data_seeds}, training seed(s) "
        f"{args.train_seeds}, {args.epochs:g} epochs, last epoch kept, validation_unknown_fraction=0. Values: mean ± "
        "std over data seeds (sample std); per seed the mean over training seeds (each run in brackets when several)."
        f" Training time per run: {np.mean(timings):.0f} s (min {np.min(timings):.0f}, max {np.max(timings):.0f}).\n\n"
        + table
        + checks
    )
    write_text_atomic(root.parent / f"scores-{split_name}.md", text)
    write_text_atomic(
        root.parent / f"scores-{split_name}.json", json.dumps({"command": command, "runs": runs}, indent=2)
    )
    print(text)


if __name__ == "__main__":
    main()
