"""The ceiling of frame choice on the synthetic protocol. With the towers frozen and no visual prompt, the embedding
the prototype head reads is a weighted sum of frozen CLIP frame features: training only chooses the weights. This
script scores the nearest class prototype on the frozen features of each clip weighted
- evenly over 8 frames (`mean of 8 frames`: the prototype baseline of `scripts/quality.py`), or over all 16;
- by each frame's true expression intensity (`true intensity`: the generator's envelope, which no model sees), the
  best any choice of frames could do on these features;
- with `--runs`, by each trained run's own attention with its query and guidance scaled by alpha (`alpha 1`: as
  trained, `alpha 0`: the plain mean of the same frames), to see whether the training found the right sharpness.

    python scripts/quality_frame_choice.py [--known neutral,happiness,... | --random_known SEED [SEED ...]]
        [--data_seeds 0 1 2] [--runs "outputs/quality-tuning/*/synthetic-*/hesp-hf-12epochs-v6/seed-0"]
        [--output_dir outputs/quality-frame-choice]

Prototypes come from the known classes' training clips only; test clips of all 11 classes are scored (AUROC known vs
unknown, OSCR). Needs no training: frozen features are computed per data set (cached under `--output_dir`). Writes
`frame-choice.md` there and prints it.
"""

import argparse
import glob
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from quality import clip_frame_features
from transformers import CLIPModel

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
from hesp_hf.atomic_files import atomic_output, write_text_atomic
from hesp_hf.data import read_annotation
from hesp_hf.data.decoding import sample_clip
from hesp_hf.data.presets import get_preset
from hesp_hf.embedded.defaults import embedded_clip_path
from hesp_hf.embedded.protocol import add_protocol_arguments, protocol_splits
from hesp_hf.embedded.synthetic import CLASSES, SyntheticSpec, clip_seed, render_clip, write_synthetic_dataset
from hesp_hf.evaluation import markdown_table
from hesp_hf.metrics import open_set_metrics


ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)


def frozen_frames(data: Path, spec: SyntheticSpec, split: str, cache: Path) -> dict[str, np.ndarray]:
    """Every frame's L2-normalised frozen CLIP feature `(N, T, D)`, its true intensity `(N, T)` (the largest action
    value the generator drew in it) and the class index `(N,)` of each clip of `split`, cached in `cache`."""
    if cache.exists():
        with np.load(cache) as saved:
            return dict(saved)
    clip_path = embedded_clip_path()
    model = CLIPModel.from_pretrained(clip_path).eval()
    processor = HESPVideoProcessor.from_clip(clip_path, num_frames=spec.num_frames)
    count = spec.train_per_class if split == "train" else spec.test_per_class
    paths, intensity, labels = [], [], []
    for label_index, label in enumerate(spec.classes):
        for number in range(count):
            _, actions = render_clip(label, clip_seed(spec, split, label_index, number), spec.num_frames, spec.size)
            intensity.append(np.abs(actions).max(axis=1))
            paths.append(str(data / f"clips/{split}/{label}_{number:04d}.mp4"))
            labels.append(CLASSES.index(label))
    features = clip_frame_features(model, processor, paths, spec.num_frames).numpy()
    found = {"features": features, "intensity": np.array(intensity), "labels": np.array(labels)}
    with atomic_output(cache) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **found)
    return found


def weighted(frames: dict[str, np.ndarray], how: str) -> np.ndarray:
    features, intensity = frames["features"], frames["intensity"]
    if how == "mean of 8 frames":  # the segment centres of 8 segments of a 16-frame clip
        return features[:, 1::2].mean(axis=1)
    if how == "mean of 16 frames":
        return features.mean(axis=1)
    weights = intensity + 1e-3  # a neutral clip (intensity 0 throughout) is weighted evenly
    return (weights[:, :, None] * features).sum(axis=1) / weights.sum(axis=1, keepdims=True)


def prototype_metrics(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                      known: list[str]) -> dict[str, float]:  # fmt: skip
    """AUROC and OSCR of the nearest class prototype (cosine; prototypes from the known training clips)."""
    known_index = [CLASSES.index(name) for name in known]
    relabel = {original: i for i, original in enumerate(known_index)}
    in_known = np.isin(train_labels, known_index)
    y_train = np.array([relabel[y] for y in train_labels[in_known]])
    prototypes = np.stack([train[in_known][y_train == k].mean(axis=0) for k in range(len(known))])
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    y_test = np.array([relabel.get(int(y), -1) for y in test_labels])
    found = open_set_metrics(100.0 * test @ prototypes.T, y_test)
    return {"auroc": float(found["auroc"]), "oscr": float(found["oscr"])}


def run_data(run: Path) -> Path:
    """The synthetic data set a run of `scripts/quality.py` trained on (its run_arguments.json)."""
    return Path(json.loads((run / "run_arguments.json").read_text())["data"]["train_annotation"]).parent


def decoded_clips(data: Path, num_frames: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The segment-centre frames `(N, T, H, W, 3)` and class indices `(N,)` of every training and test clip of `data`."""
    preset = get_preset("custom", list(CLASSES))
    clips = {}
    for split in ("train", "test"):
        rows = read_annotation(data / f"{split}.csv", preset)
        frames = np.stack([sample_clip(row.path, num_frames).frames for row in rows])
        clips[split] = frames, np.array([row.label for row in rows])
    return clips


def sharpened(
    run: Path, clips: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[list[str], dict[float, dict[str, float]]]:
    """A trained run's known classes, and its attention over the frames of `clips` (`decoded_clips` of its data set)
    with the query and the guidance scaled by each alpha: AUROC and OSCR per alpha."""
    model = HESPForOpenSetVideoClassification.from_pretrained(run).eval()
    if model.config.temporal_pooling != "attention":
        raise SystemExit(
            f"{run}: temporal_pooling is {model.config.temporal_pooling!r}; the alpha rows need attention."
        )
    processor = HESPVideoProcessor.from_pretrained(run)
    frames, labels = {}, {}
    for split, (videos, split_labels) in clips.items():
        features = []
        for start in range(0, len(videos), 32):
            batch = videos[start : start + 32]
            pixels = processor(list(batch), return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
            with torch.no_grad():
                features.append(model.frame_features(pixels.flatten(0, 1))[0].view(len(batch), batch.shape[1], -1))
        frames[split], labels[split] = torch.cat(features), split_labels
    pooling = model.temporal_pooling
    query, guidance = pooling.query.detach().clone(), pooling.text_guidance.detach().clone()
    found = {}
    with torch.no_grad():
        text = model.class_text_embeds()
        for alpha in ALPHAS:
            pooling.query.copy_(query * alpha)
            pooling.text_guidance.copy_(guidance * alpha)
            train, test = (pooling(frames[split], text)[0].numpy() for split in ("train", "test"))
            found[alpha] = prototype_metrics(train, labels["train"], test, labels["test"], model.config.known_labels)
    return model.config.known_labels, found


def list_name(known: list[str]) -> str:
    return ", ".join(name for name in CLASSES if name in known)  # in class order, however the list was given


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_arguments(parser, "outputs/quality-frame-choice", several_lists=True)
    parser.add_argument("--runs", help="glob of trained run folders (scripts/quality.py's) for the alpha rows")
    args = parser.parse_args()
    splits = protocol_splits(parser, args)
    runs = sorted(Path(path) for path in glob.glob(args.runs)) if args.runs else []
    if args.runs and not runs:
        parser.error(f"--runs {args.runs!r} matches no folder.")
    results: dict[str, dict[str, list[dict]]] = {list_name(known): {} for known, _ in splits}
    for seed in args.data_seeds:
        spec = SyntheticSpec(train_per_class=args.train_per_class, seed=seed)
        data = write_synthetic_dataset(args.data_dir, spec)
        frames = {
            split: frozen_frames(data, spec, split, args.output_dir / f"frames-{data.name}-{split}.npz")
            for split in ("train", "test")
        }
        for known, _ in splits:
            for how in ("mean of 8 frames", "mean of 16 frames", "true intensity"):
                train, test = weighted(frames["train"], how), weighted(frames["test"], how)
                metrics = prototype_metrics(train, frames["train"]["labels"], test, frames["test"]["labels"], known)
                results[list_name(known)].setdefault(how, []).append(metrics)
    for data, group in itertools.groupby(sorted(runs, key=run_data), key=run_data):  # each data set decoded once
        group = list(group)
        clips = decoded_clips(data, json.loads((group[0] / "config.json").read_text())["num_frames"])
        for run in group:
            known, by_alpha = sharpened(run, clips)
            for alpha, metrics in by_alpha.items():
                results.setdefault(list_name(known), {}).setdefault(f"trained attention, alpha {alpha:g}", []).append(
                    metrics
                )
    rows = [
        [known, how, str(len(values)), *(f"{np.mean([v[m] for v in values]):.4f}" for m in ("auroc", "oscr"))]
        for known, by_how in results.items()
        for how, values in by_how.items()
    ]
    table = markdown_table(["known list", "frame weights", "data sets / runs", "AUROC", "OSCR"], rows)
    write_text_atomic(args.output_dir / "frame-choice.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
