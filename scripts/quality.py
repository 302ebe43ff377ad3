"""Quality on the synthetic protocol: HESP (the hesp-hf and the paper recipe) against every training-free baseline on
the same frozen embedded CLIP, and ablations of the recommended recipe, per data seed over several training seeds.

    python scripts/quality.py [--data_seeds 0 1 2] [--train_seeds 0 1 2 3 4] [--ablation_seeds 0 1 2] [--jobs 2]
        [--known neutral,happiness,... | --random_known SEED] [--recipes hesp-hf paper] [--output_dir outputs/quality]
        [--ablations "without visual prompt" ...]

For each data seed (a freshly generated synthetic set: 30 training and 15 test clips per class; by default the demo's
6 known / 5 unknown classes, `--known` picks another split, `--random_known SEED` draws one and prints it):
- zero-shot CLIP with the class names ("{name}."), scored by max logit;
- every baseline of `hesp_hf.evaluation.baselines` on frame-mean CLIP features (8 segment-centre frames, each feature
  L2-normalised): a linear probe by max-softmax, max-logit and energy, the nearest class prototype, kNN (k = 1, 5, 10),
  Mahalanobis (shared covariance, Ledoit-Wolf shrinkage; on raw and on L2-normalised features), fitted on the known
  training clips;
- HESP with the hesp-hf recipe (`--recipe hesp-hf`: RPL distance, class-stratified batches, 4 context vectors, the
  prototype head) as it predicts, and the same trained models by their prompt ensemble and each branch alone; and with
  the paper's recipe (`--recipe paper`: ARPL distance, plain shuffle, 16 context vectors, the ensemble);
- ablations of the hesp-hf recipe, one change each.
Each HESP variant trains once per training seed (`--seed`: the initialisation, the validation hold-out and the data
order), 12 epochs, the last epoch kept; validation holds known classes only, so nothing of the unknown classes reaches
training, selection or calibration. Per data seed the table gives the mean ± std over the training seeds and the
worst run, then the recommended model against the strongest baseline; `results-data-<seeds>.md` / `.csv` hold the
table and every run. Finished runs are reused, so an interrupted measurement resumes.
"""

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel

import hesp_hf
from hesp_hf import HESPVideoProcessor
from hesp_hf.atomic_files import write_text_atomic
from hesp_hf.data import read_annotation
from hesp_hf.data.decoding import sample_clip
from hesp_hf.data.presets import get_preset
from hesp_hf.embedded.defaults import embedded_clip_fingerprint, embedded_clip_path, synthetic_training_options
from hesp_hf.embedded.protocol import add_protocol_arguments, protocol_split
from hesp_hf.embedded.synthetic import CLASSES, SyntheticSpec, write_synthetic_dataset
from hesp_hf.evaluation import METRICS, markdown_table, write_seed_table
from hesp_hf.evaluation.baselines import baseline_metrics
from hesp_hf.metrics import open_set_metrics


# name -> (hesp_hf.train options on top of the synthetic recipe, the metrics.json branch reported or None for the model's
# own predictions, whether it is an ablation run over --ablation_seeds)
HESP_ROWS = {
    "HESP, hesp-hf recipe (recommended): prototype head": ({}, None, False),
    "HESP, hesp-hf recipe: its ensemble (prompt logits)": ({}, "ensemble", False),
    "HESP, hesp-hf recipe: its CLIP branch alone": ({}, "clip", False),
    "HESP, hesp-hf recipe: its reciprocal branch alone": ({}, "reciprocal", False),
    "HESP, paper recipe: ensemble (as published)": ({"recipe": "paper"}, None, False),
    "HESP, paper recipe: its CLIP branch alone": ({"recipe": "paper"}, "clip", False),
    "HESP, paper recipe: its reciprocal branch alone": ({"recipe": "paper"}, "reciprocal", False),
    "ablation: plain shuffle instead of class-stratified batches": ({"train_sampling": "random"}, None, True),
    "ablation: without visual prompt": ({"use_visual_prompt": False}, None, True),
    "ablation: without reciprocal points (two loss terms)": ({"use_reciprocal_points": False}, None, True),
}


BASELINE_PREFIX = "baseline (frozen frame-mean features): "
RECOMMENDED = "HESP, hesp-hf recipe (recommended): prototype head"
# Version of the runs and baselines: 4, the prototype head falling back to the frozen space only past a margin (older
# folders are never reused).
RESULTS_VERSION = 4


def clip_features(model, processor, paths: list[str], num_frames: int = 8) -> torch.Tensor:
    """Mean over `num_frames` segment-centre frames of the normalised CLIP image features, per clip `(N, D)`."""
    features = []
    for start in range(0, len(paths), 32):
        videos = np.stack([sample_clip(path, num_frames).frames for path in paths[start : start + 32]])
        pixels = processor(list(videos), return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
        with torch.no_grad():
            frames = model.get_image_features(pixel_values=pixels.flatten(0, 1)).pooler_output
        features.append(F.normalize(frames, dim=-1).view(len(videos), num_frames, -1).mean(dim=1))
    return torch.cat(features)


def baselines(data: Path, known_names: list[str]) -> dict[str, dict]:
    clip_path = embedded_clip_path()
    model = CLIPModel.from_pretrained(clip_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_path)
    processor = HESPVideoProcessor.from_clip(clip_path, num_frames=8)
    preset = get_preset("custom", list(CLASSES))
    known = [CLASSES.index(name) for name in known_names]
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
    zero_shot = open_set_metrics(
        (model.logit_scale.exp() * torch.from_numpy(x_test) @ text.T).detach().numpy(), y_test
    )
    found = {"zero-shot CLIP (class names), max-logit": {key: float(zero_shot[key]) for key in METRICS}}
    for name, metrics in baseline_metrics(x_train, y_train, x_test, y_test).items():
        found[BASELINE_PREFIX + name] = metrics
    return found


def train_hesp(data: Path, output: Path, extra: dict, seed: int, epochs: float, known: list[str]) -> dict:
    """One HESP training (`hesp_hf.train`; reused when its metrics exist), run in a worker process of this script's
    pool: one thread each, so `--jobs` runs share the cores; its log goes to `<output>.log`."""
    if not (output / "metrics.json").exists():
        options = {
            **synthetic_training_options(data, output, epochs, seed, known_labels=known),
            # Last epoch kept: no per-epoch evaluation or checkpoint is needed. A folder without metrics.json is an
            # interrupted run of the same settings: replaced.
            "eval_strategy": "no",
            "save_strategy": "no",
            "dataloader_num_workers": 0,
            "overwrite_output_dir": True,
            "disable_tqdm": True,
            **extra,
        }
        log = output.parent / f"{output.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            handler = logging.StreamHandler(handle)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(handler)
            try:
                hesp_hf.train(**options)
            finally:
                logging.getLogger().removeHandler(handler)
    return json.loads((output / "metrics.json").read_text())


def start_worker() -> None:
    """A pool worker: one thread (set before any work; the pool's processes are spawned, so torch starts here)."""
    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.INFO)
    os.environ["HF_HUB_OFFLINE"] = "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_arguments(parser, "outputs/quality")
    parser.add_argument("--ablation_seeds", type=int, nargs="*", default=[0, 1, 2], help="none: skip the ablations")
    parser.add_argument(
        "--ablations",
        nargs="+",
        choices=[name.removeprefix("ablation: ") for name, (_, _, ablation) in HESP_ROWS.items() if ablation],
        help="run only these ablations (default: all)",
        metavar="NAME",
    )
    parser.add_argument("--jobs", type=int, default=2, help="training runs at once (one thread each)")
    parser.add_argument(
        "--recipes",
        nargs="+",
        choices=["hesp-hf", "paper"],
        default=["hesp-hf", "paper"],
        help="HESP recipes to train",
    )
    args = parser.parse_args()
    known, root = protocol_split(parser, args)
    if args.random_known is not None:
        print(f"--random_known {args.random_known}: known classes {', '.join(known)}", flush=True)

    runs: dict[str, dict[int, list[dict]]] = {}
    jobs = []  # (row names sharing the run, branch per row, data seed, folder, extra, training seed)
    for data_seed in args.data_seeds:
        data = write_synthetic_dataset(
            args.data_dir, SyntheticSpec(train_per_class=args.train_per_class, seed=data_seed)
        )
        # Keyed by the data set's settings hash, the backbone's weights and the epoch count: other settings never
        # reuse these results.
        folder_of_data = root / f"{data.name}-clip-{embedded_clip_fingerprint()}"
        cached = folder_of_data / f"baselines-v{RESULTS_VERSION}.json"
        if not cached.exists():
            write_text_atomic(cached, json.dumps(baselines(data, known), indent=2))
        for name, metrics in json.loads(cached.read_text()).items():
            runs.setdefault(name, {})[data_seed] = [metrics]
        by_options: dict[tuple[tuple[str, object], ...], list[tuple[str, str | None, bool]]] = {}
        for name, (extra, branch, ablation) in HESP_ROWS.items():
            if ablation and not args.ablation_seeds:
                continue
            if ablation and args.ablations and name.removeprefix("ablation: ") not in args.ablations:
                continue
            by_options.setdefault(tuple(extra.items()), []).append((name, branch, ablation))
        for extra, rows in by_options.items():
            seeds = args.ablation_seeds if all(ablation for _, _, ablation in rows) else args.train_seeds
            variant = "-".join(f"{name}-{str(value).lower()}" for name, value in extra) or "hesp-hf"
            if dict(extra).get("recipe", "hesp-hf") not in args.recipes:
                continue
            for seed in seeds:
                folder = folder_of_data / f"{variant}-{args.epochs:g}epochs-v{RESULTS_VERSION}" / f"seed-{seed}"
                jobs.append((rows, data_seed, data, folder, dict(extra), seed))

    jobs.sort(key=lambda job: all(ablation for _, _, ablation in job[0]))  # the main rows first, then ablations

    # Worker processes (spawned: a fresh torch in each, one thread) call `hesp_hf.train`; a process per run at once is
    # the point here, so runs share the cores.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context, initializer=start_worker) as pool:
        futures = [
            pool.submit(train_hesp, data, folder, extra, seed, args.epochs, known)
            for *_, data, folder, extra, seed in jobs
        ]
        for done, ((rows, data_seed, *_, folder, _, _), future) in enumerate(zip(jobs, futures, strict=True), start=1):
            metrics = future.result()
            for name, branch, _ in rows:
                values = metrics if branch is None else metrics["branches"][branch]
                runs.setdefault(name, {}).setdefault(data_seed, []).append({m: values[m] for m in METRICS})
            print(f"[{done}/{len(jobs)}] {folder}: AUROC {metrics['auroc']:.3f}", flush=True)

    ordered = {name: runs[name] for name in [*(n for n in runs if n not in HESP_ROWS), *HESP_ROWS] if name in runs}
    note = (
        f"\nSplit: known {', '.join(known)}. Per data seed: mean ± std over training seeds {args.train_seeds} "
        f"(ablations: {args.ablation_seeds}) and the worst run; the last three columns average the per-seed means "
        f"over data seeds {args.data_seeds}. {args.epochs:g} epochs per HESP run, last epoch kept.\n"
    )
    print(write_seed_table(root, ordered, args.data_seeds, note))
    if RECOMMENDED in ordered:
        print(target_check(ordered, args.data_seeds))


def seed_means(runs: dict[int, list[dict]], metric: str, data_seeds: list[int]) -> np.ndarray:
    """Per data seed, the mean of `metric` over that seed's runs."""
    return np.array([np.mean([run[metric] for run in runs[seed]]) for seed in data_seeds])


def target_check(runs: dict[str, dict[int, list[dict]]], data_seeds: list[int]) -> str:
    """The recommended model against the strongest baseline (highest mean AUROC over data seeds): mean AUROC
    >= best + 0.02, mean OSCR >= the best baseline OSCR, and no data seed's AUROC below that seed's best baseline
    AUROC - 0.01."""
    names = [name for name in runs if name.startswith(BASELINE_PREFIX)]
    auroc = {name: seed_means(runs[name], "auroc", data_seeds) for name in names}
    oscr = {name: seed_means(runs[name], "oscr", data_seeds).mean() for name in names}
    best = max(names, key=lambda name: auroc[name].mean())
    ours_auroc = seed_means(runs[RECOMMENDED], "auroc", data_seeds)
    ours_oscr = seed_means(runs[RECOMMENDED], "oscr", data_seeds).mean()
    per_seed_best = np.max(np.stack(list(auroc.values())), axis=0)
    best_oscr = max(oscr.values())
    rows = [
        ["mean AUROC >= strongest baseline + 0.02", f"{ours_auroc.mean():.3f} vs {auroc[best].mean():.3f} "
         f"({best.removeprefix(BASELINE_PREFIX)})", "yes" if ours_auroc.mean() >= auroc[best].mean() + 0.02 else "no"],
        ["mean OSCR >= best baseline OSCR", f"{ours_oscr:.3f} vs {best_oscr:.3f}",
         "yes" if ours_oscr >= best_oscr else "no"],
        ["every data seed's AUROC >= that seed's best baseline - 0.01",
         " / ".join(f"{a:.3f} vs {b:.3f}" for a, b in zip(ours_auroc, per_seed_best, strict=True)),
         "yes" if np.all(ours_auroc >= per_seed_best - 0.01) else "no"],
    ]  # fmt: skip
    return "\n" + markdown_table(["target (recommended model)", "measured", "met"], rows)


if __name__ == "__main__":
    main()
