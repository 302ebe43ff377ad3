"""Quality on the synthetic protocol: HESP against baselines on the same frozen embedded CLIP, and HESP's ablations.

    python scripts/quality.py [--seeds 0 1 2] [--epochs 12] [--output_dir outputs/quality]

For each seed (a freshly generated synthetic data set, the demo's 6 known / 5 unknown classes):
- zero-shot CLIP with the class names ("{name}."), scored by max logit;
- frame-mean CLIP features with a linear classifier (logistic regression), scored by max-softmax and by max-logit;
- HESP as the demo trains it (attention pooling, predictions and known-ness from the CLIP branch), the same with the
  paper's ensemble of CLIP and reciprocal logits at inference, and HESP with each module switched off: learned text
  prompts (`n_ctx=0`, the class name alone), visual prompt, temporal attention (mean pooling), reciprocal points;
then mean ± std ACC / AUROC / OSCR over the seeds as `results.md` / `results.csv`. Results per run are kept, so an
interrupted measurement resumes.
"""

import _unshadow  # noqa: F401, I001  (first: keeps scripts/evaluate.py from shadowing `evaluate`)

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from transformers import AutoTokenizer, CLIPModel

from hesp_hf import HESPVideoProcessor
from hesp_hf.data import read_annotation
from hesp_hf.data.decoding import sample_clip
from hesp_hf.data.presets import get_preset
from hesp_hf.embedded import DEMO_KNOWN, embedded_clip_path, synthetic_train_arguments
from hesp_hf.atomic_files import write_text_atomic
from hesp_hf.metrics import open_set_metrics
from hesp_hf.synthetic import CLASSES, SyntheticSpec, write_synthetic_dataset


TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"
HESP_VARIANTS = {
    "HESP (full: attention pooling, CLIP-branch inference)": [],
    "HESP with the paper's ensemble inference (CLIP + reciprocal logits)": ["--inference_logits", "ensemble"],
    "HESP without learned text prompts (n_ctx=0)": ["--n_ctx", "0"],
    "HESP without visual prompt": ["--use_visual_prompt", "false"],
    "HESP without temporal attention (mean)": ["--temporal_pooling", "mean"],
    "HESP without reciprocal points": ["--use_reciprocal_points", "false"],
}


def clip_features(model, processor, paths: list[str], num_frames: int = 8) -> torch.Tensor:
    """Mean over `num_frames` segment-centre frames of the normalised CLIP image features, per clip `(N, D)`."""
    features = []
    for start in range(0, len(paths), 32):
        videos = np.stack([sample_clip(path, num_frames) for path in paths[start : start + 32]])
        pixels = processor(list(videos), return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
        with torch.no_grad():
            frames = model.get_image_features(pixel_values=pixels.flatten(0, 1)).pooler_output
        features.append(F.normalize(frames, dim=-1).view(len(videos), num_frames, -1).mean(dim=1))
    return torch.cat(features)


def baselines(data: Path) -> dict[str, dict]:
    clip_path = embedded_clip_path()
    model = CLIPModel.from_pretrained(clip_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_path)
    processor = HESPVideoProcessor.from_clip(clip_path, num_frames=8)
    preset = get_preset("custom", list(CLASSES))
    known = [CLASSES.index(name) for name in DEMO_KNOWN]
    relabel = {original: i for i, original in enumerate(sorted(known))}
    train = [r for r in read_annotation(data / "train.csv", preset) if r.label in relabel]
    test = read_annotation(data / "test.csv", preset)
    y_train = np.array([relabel[r.label] for r in train])
    y_test = np.array([relabel.get(r.label, -1) for r in test])
    x_train = clip_features(model, processor, [r.path for r in train]).numpy()
    x_test = clip_features(model, processor, [r.path for r in test]).numpy()
    names = [CLASSES[i] for i in sorted(known)]
    with torch.no_grad():
        text = model.get_text_features(**tokenizer([f"{n}." for n in names], padding=True, return_tensors="pt"))
        text = F.normalize(text.pooler_output, dim=-1)
    zero_shot = (model.logit_scale.exp() * torch.from_numpy(x_test) @ text.T).detach().numpy()
    probe = LogisticRegression(max_iter=2000, C=10.0).fit(x_train, y_train)
    logits = probe.decision_function(x_test)
    return {
        "zero-shot CLIP (class names), max-logit": open_set_metrics(zero_shot, y_test),
        "linear probe on frame-mean features, max-softmax": open_set_metrics(logits, y_test, score="max_softmax"),
        "linear probe on frame-mean features, max-logit": open_set_metrics(logits, y_test),
    }


def train_hesp(data: Path, output: Path, extra: list[str], epochs: float, seed: int) -> dict:
    if not (output / "metrics.json").exists():
        command = [
            sys.executable,
            str(TRAIN_SCRIPT),
            *synthetic_train_arguments(data, output, epochs, seed),
            *extra,
        ]
        subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    return json.loads((output / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--train_per_class", type=int, default=30)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/quality"))
    parser.add_argument("--data_dir", type=Path, default=Path("outputs/synthetic"))
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        data = write_synthetic_dataset(args.data_dir, SyntheticSpec(train_per_class=args.train_per_class, seed=seed))
        cached = args.output_dir / f"seed-{seed}" / "baselines.json"
        if not cached.exists():
            write_text_atomic(cached, json.dumps(baselines(data), indent=2))
        for name, metrics in json.loads(cached.read_text()).items():
            results.setdefault(name, []).append(metrics)
        for index, (name, extra) in enumerate(HESP_VARIANTS.items()):
            output = args.output_dir / f"seed-{seed}" / f"hesp-{index}"
            results.setdefault(name, []).append(train_hesp(data, output, extra, args.epochs, seed))
        print(f"seed {seed} done", flush=True)
    lines = ["| method | ACC | AUROC | OSCR |", "| --- | --- | --- | --- |"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "seed", "accuracy", "auroc", "oscr"])
    for name, runs in results.items():
        cells = []
        for metric in ("accuracy", "auroc", "oscr"):
            values = np.array([run[metric] for run in runs])
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for seed, run in zip(args.seeds, runs, strict=True):
            writer.writerow([name, seed, run["accuracy"], run["auroc"], run["oscr"]])
    table = "\n".join(lines) + f"\n\n(mean ± std over seeds {args.seeds}; {args.epochs:g} epochs per HESP run)\n"
    write_text_atomic(args.output_dir / "results.md", table)
    write_text_atomic(args.output_dir / "results.csv", buffer.getvalue())
    print(table)


if __name__ == "__main__":
    main()
