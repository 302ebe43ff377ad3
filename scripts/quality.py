"""Quality on the synthetic protocol: HESP (the hesp-hf and the paper recipe) against every training-free baseline on
the same frozen embedded CLIP, and ablations of the recommended recipe, per data seed over several training seeds;
over many known lists, whether the recommended recipe meets its targets on each.

    python scripts/quality.py [--data_seeds 0 1 2] [--train_seeds 0 1 2 3 4] [--ablation_seeds 0 1 2] [--jobs 2]
        [--known neutral,happiness,... | --random_known SEED [SEED ...]] [--recipes hesp-hf paper]
        [--ablations "with the paper's visual prompt" ...] [--close_call_seeds 1] [--output_dir outputs/quality]

For each known list (by default the demo's 6 known / 5 unknown classes, `--known` picks another, `--random_known`
draws one per seed and prints it) and each data seed (a freshly generated synthetic set: 30 training and 15 test
clips per class):
- zero-shot CLIP with the class names ("{name}."), scored by max logit;
- every baseline of `hesp_hf.evaluation.baselines` on frame-mean CLIP features (8 segment-centre frames, each feature
  L2-normalised): a linear probe by max-softmax, max-logit and energy, the nearest class prototype, kNN (k = 1, 5, 10),
  Mahalanobis (shared covariance, Ledoit-Wolf shrinkage; on raw and on L2-normalised features), fitted on the known
  training clips (the frozen features are computed once per data set and shared by every list);
- HESP with the hesp-hf recipe (`--recipe hesp-hf`: RPL distance, class-stratified batches, 4 context vectors, no
  visual prompt, the prototype head) as it predicts, and the same trained models by their prompt ensemble and each
  branch alone; and with the paper's recipe (`--recipe paper`: ARPL distance, plain shuffle, 16 context vectors, the
  visual prompt, the ensemble);
- ablations of the hesp-hf recipe, one change each.
Each HESP variant trains once per training seed (`--seed`: the initialisation, the validation hold-out and the data
order), 12 epochs, the last epoch kept; validation holds known classes only, so nothing of the unknown classes reaches
training, selection or calibration. Per data seed the table gives the mean ± std over the training seeds and the
worst run, then the recommended model against its targets (mean AUROC >= the strongest baseline + 0.03, mean OSCR >=
the best baseline OSCR + 0.05, no derailed run: `training_health` in each run's metrics.json);
`<list>/results-data-<seeds>.md` / `.csv` hold each list's table and every run, and with several lists
`lists-data-<seeds>.md` one row per list. `--close_call_seeds` trains the recommended recipe again with those
training seeds on every list within `--close_call` (0.01) of a target. Finished runs are reused, so an interrupted
measurement resumes.
"""

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel

import hesp_hf
from hesp_hf import HESPVideoProcessor
from hesp_hf.atomic_files import atomic_output, write_text_atomic
from hesp_hf.data import read_annotation
from hesp_hf.data.decoding import sample_clip
from hesp_hf.data.presets import get_preset
from hesp_hf.embedded.defaults import embedded_clip_fingerprint, embedded_clip_path, synthetic_training_options
from hesp_hf.embedded.protocol import add_protocol_arguments, protocol_splits
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
    "ablation: with the paper's visual prompt": ({"use_visual_prompt": True}, None, True),
    "ablation: with the visual prompt bounded to 0.1": (
        {"use_visual_prompt": True, "visual_prompt_bound": 0.1},
        None,
        True,
    ),
    "ablation: with the visual prompt at 0.1x the learning rate": (
        {"use_visual_prompt": True, "visual_prompt_lr_scale": 0.1},
        None,
        True,
    ),
    "ablation: with the visual prompt at 0.01x the learning rate": (
        {"use_visual_prompt": True, "visual_prompt_lr_scale": 0.01},
        None,
        True,
    ),
    "ablation: without reciprocal points (two loss terms)": ({"use_reciprocal_points": False}, None, True),
    # Training the embedding for the prototype rule: tighter known classes from the supervised contrastive term.
    "ablation: contrastive temperature 0.1": ({"loss_weights": "contrastive_temperature=0.1"}, None, True),
    "ablation: contrastive weight 1 (the paper's)": ({"loss_weights": "known_contrastive_weight=1"}, None, True),
    "ablation: batches of 16 clips (twice the steps)": ({"per_device_train_batch_size": 16}, None, True),
}


BASELINE_PREFIX = "baseline (frozen frame-mean features): "
RECOMMENDED = "HESP, hesp-hf recipe (recommended): prototype head"
# Version of the runs and baselines: 6, the hesp-hf recipe's contrastive term weighted 3x (5: the recipe without the
# visual prompt and each run's training health; older folders are never reused).
RESULTS_VERSION = 6


def clip_frame_features(model, processor, paths: list[str], num_frames: int = 8) -> torch.Tensor:
    """The normalised CLIP image feature of each of `num_frames` segment-centre frames, per clip `(N, T, D)`."""
    features = []
    for start in range(0, len(paths), 32):
        videos = np.stack([sample_clip(path, num_frames).frames for path in paths[start : start + 32]])
        pixels = processor(list(videos), return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
        with torch.no_grad():
            frames = model.get_image_features(pixel_values=pixels.flatten(0, 1)).pooler_output
        features.append(F.normalize(frames, dim=-1).view(len(videos), num_frames, -1))
    return torch.cat(features)


def clip_features(model, processor, paths: list[str], num_frames: int = 8) -> torch.Tensor:
    """Mean over `num_frames` segment-centre frames of the normalised CLIP image features, per clip `(N, D)`."""
    return clip_frame_features(model, processor, paths, num_frames).mean(dim=1)


def frozen_features(data: Path, cache: Path) -> dict[str, np.ndarray]:
    """Frame-mean CLIP features and class indices (of `CLASSES`) of every training and test clip of `data`, computed
    once per data set (`cache`, an .npz shared by every known list) and the class names' text features."""
    if cache.exists():
        with np.load(cache) as saved:
            return dict(saved)
    clip_path = embedded_clip_path()
    model = CLIPModel.from_pretrained(clip_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_path)
    processor = HESPVideoProcessor.from_clip(clip_path, num_frames=8)
    preset = get_preset("custom", list(CLASSES))
    found = {}
    for split in ("train", "test"):
        rows = read_annotation(data / f"{split}.csv", preset)
        found[f"x_{split}"] = clip_features(model, processor, [r.path for r in rows]).numpy()
        found[f"y_{split}"] = np.array([r.label for r in rows])
    with torch.no_grad():
        text = model.get_text_features(**tokenizer([f"{n}." for n in CLASSES], padding=True, return_tensors="pt"))
        found["text"] = F.normalize(text.pooler_output, dim=-1).numpy()
    found["logit_scale"] = np.array(float(model.logit_scale.exp()))
    with atomic_output(cache) as temporary, open(temporary, "wb") as handle:  # written whole, then renamed
        np.savez(handle, **found)
    return found


def baselines(features: dict[str, np.ndarray], known_names: list[str]) -> dict[str, dict]:
    """Zero-shot CLIP and every training-free baseline for one known list, on `frozen_features`: fitted on the known
    training clips, scored on every test clip (unknown classes as -1)."""
    known = sorted(CLASSES.index(name) for name in known_names)
    relabel = {original: i for i, original in enumerate(known)}
    in_train = np.isin(features["y_train"], known)
    x_train, y_train = features["x_train"][in_train], np.array([relabel[y] for y in features["y_train"][in_train]])
    x_test = features["x_test"]
    y_test = np.array([relabel.get(int(y), -1) for y in features["y_test"]])
    zero_shot = open_set_metrics(float(features["logit_scale"]) * x_test @ features["text"][known].T, y_test)
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
            "report_baselines": False,  # this script fits them itself, once per data set and list
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
    add_protocol_arguments(parser, "outputs/quality", several_lists=True)
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
    parser.add_argument(
        "--close_call_seeds",
        type=int,
        nargs="*",
        default=[],
        help="training seeds added to the recommended recipe on every list within --close_call of a target",
    )
    parser.add_argument("--close_call", type=float, default=0.01, help="how near a target counts as a close call")
    args = parser.parse_args()
    splits = protocol_splits(parser, args)
    if args.random_known is not None:
        for seed, (known, _) in zip(
            args.random_known if isinstance(args.random_known, list) else [args.random_known], splits, strict=True
        ):
            print(f"--random_known {seed}: known classes {', '.join(known)}", flush=True)
    datasets = {
        seed: write_synthetic_dataset(args.data_dir, SyntheticSpec(train_per_class=args.train_per_class, seed=seed))
        for seed in args.data_seeds
    }
    lists = [QualityList(known, root) for known, root in splits]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=start_worker) as pool:  # fmt: skip
        run_jobs(pool, [job for item in lists for job in item.jobs(args, datasets, args.train_seeds)])
        close = [
            item for item in lists if RECOMMENDED in item.runs and item.check(args.data_seeds).close(args.close_call)
        ]
        if close and args.close_call_seeds:
            print(f"Close calls ({len(close)} lists): training seeds {args.close_call_seeds} added.", flush=True)
            run_jobs(pool, [job for item in close for job in item.jobs(args, datasets, args.close_call_seeds, True)])
    note = (
        f"Per data seed: mean ± std over training seeds {args.train_seeds} (ablations: {args.ablation_seeds}; close "
        f"calls: {args.close_call_seeds or 'none'}) and the worst run; the last three columns average the per-seed "
        f"means over data seeds {args.data_seeds}. {args.epochs:g} epochs per HESP run, last epoch kept.\n"
    )
    for item in lists:
        table = write_seed_table(
            item.root, item.ordered(), args.data_seeds, f"\nSplit: known {', '.join(item.known)}. {note}"
        )
        if len(lists) == 1:
            print(table)
            if RECOMMENDED in item.runs:
                print(item.check(args.data_seeds).markdown())
    if len(lists) > 1 and all(RECOMMENDED in item.runs for item in lists):
        summary = lists_table([item.check(args.data_seeds) for item in lists])
        write_text_atomic(
            args.output_dir / ("lists-data-" + "-".join(map(str, args.data_seeds)) + ".md"), summary + note
        )
        print(summary + note)


class QualityList:
    """One known list: its runs (`runs[row][data_seed]`: metrics of each run) and the training health of the
    recommended recipe's runs (`derailed[data_seed]`: one flag per run)."""

    def __init__(self, known: list[str], root: Path) -> None:
        self.known, self.root = known, root
        self.runs: dict[str, dict[int, list[dict]]] = {}
        self.derailed: dict[int, list[bool]] = {}

    def jobs(self, args: argparse.Namespace, datasets: dict[int, Path], train_seeds: list[int],
             recommended_only: bool = False) -> list[tuple]:  # fmt: skip
        """The training jobs of this list (`(list, rows, data seed, data, folder, extra, seed)`), after its baselines
        (cached per data seed and list; the frozen features per data seed)."""
        jobs = []
        for data_seed, data in datasets.items():
            folder_of_data = self.root / f"{data.name}-clip-{embedded_clip_fingerprint()}"
            if not recommended_only:
                cached = folder_of_data / f"baselines-v{RESULTS_VERSION}.json"
                if not cached.exists():
                    features_file = args.output_dir / f"features-{data.name}-clip-{embedded_clip_fingerprint()}.npz"
                    found = baselines(frozen_features(data, features_file), self.known)
                    write_text_atomic(cached, json.dumps(found, indent=2))
                for name, metrics in json.loads(cached.read_text()).items():
                    self.runs.setdefault(name, {})[data_seed] = [metrics]
            by_options: dict[tuple[tuple[str, object], ...], list[tuple[str, str | None, bool]]] = {}
            for name, (extra, branch, ablation) in HESP_ROWS.items():
                if ablation and (recommended_only or not args.ablation_seeds):
                    continue
                if ablation and args.ablations and name.removeprefix("ablation: ") not in args.ablations:
                    continue
                by_options.setdefault(tuple(extra.items()), []).append((name, branch, ablation))
            for extra, rows in by_options.items():
                if dict(extra).get("recipe", "hesp-hf") not in args.recipes or (recommended_only and extra):
                    continue
                seeds = args.ablation_seeds if all(ablation for _, _, ablation in rows) else train_seeds
                variant = "-".join(f"{name}-{str(value).lower()}" for name, value in extra) or "hesp-hf"
                for seed in seeds:
                    folder = folder_of_data / f"{variant}-{args.epochs:g}epochs-v{RESULTS_VERSION}" / f"seed-{seed}"
                    jobs.append((self, rows, data_seed, data, folder, dict(extra), seed, args.epochs))
        jobs.sort(key=lambda job: all(ablation for _, _, ablation in job[1]))  # the main rows first, then ablations
        return jobs

    def add(self, rows: list[tuple[str, str | None, bool]], data_seed: int, metrics: dict) -> None:
        for name, branch, _ in rows:
            values = metrics if branch is None else metrics["branches"][branch]
            self.runs.setdefault(name, {}).setdefault(data_seed, []).append({m: values[m] for m in METRICS})
            if name == RECOMMENDED:
                self.derailed.setdefault(data_seed, []).append(bool(metrics["training_health"]["derailed"]))

    def ordered(self) -> dict[str, dict[int, list[dict]]]:
        names = [*(n for n in self.runs if n not in HESP_ROWS), *(n for n in HESP_ROWS if n in self.runs)]
        return {name: self.runs[name] for name in names}

    def check(self, data_seeds: list[int]) -> "TargetCheck":
        return target_check(self.known, self.runs, self.derailed, data_seeds)


def run_jobs(pool: ProcessPoolExecutor, jobs: list[tuple]) -> None:
    """Worker processes (spawned: a fresh torch in each, one thread) call `hesp_hf.train`; a process per run at once
    is the point here, so runs share the cores. Each finished run is added to its list."""
    futures = [pool.submit(train_hesp, data, folder, extra, seed, epochs, item.known)
               for item, _, _, data, folder, extra, seed, epochs in jobs]  # fmt: skip
    for done, ((item, rows, data_seed, _, folder, *_), future) in enumerate(zip(jobs, futures, strict=True), start=1):
        metrics = future.result()
        item.add(rows, data_seed, metrics)
        health = "derailed" if metrics["training_health"]["derailed"] else "healthy"
        print(f"[{done}/{len(jobs)}] {folder}: AUROC {metrics['auroc']:.3f} ({health})", flush=True)


def seed_means(runs: dict[int, list[dict]], metric: str, data_seeds: list[int]) -> np.ndarray:
    """Per data seed, the mean of `metric` over that seed's runs."""
    return np.array([np.mean([run[metric] for run in runs[seed]]) for seed in data_seeds])


# The targets: the recommended model's mean AUROC at least the strongest baseline's + 0.03, its mean OSCR at least the
# best baseline OSCR + 0.05, and no derailed run.
AUROC_MARGIN = 0.03
OSCR_MARGIN = 0.05


@dataclass
class TargetCheck:
    """The recommended model on one known list against the strongest baseline (highest mean AUROC over data seeds)
    and the best baseline OSCR; `runs` every run's AUROC (for the worst) and `seed_std` the mean over data seeds of
    the std over training seeds (None with one training seed)."""

    known: list[str]
    auroc: float
    oscr: float
    baseline: str
    baseline_auroc: float
    baseline_oscr: float
    runs: list[float]
    seed_std: float | None
    derailed: int

    def met(self) -> bool:
        return (
            self.auroc >= self.baseline_auroc + AUROC_MARGIN
            and self.oscr >= self.baseline_oscr + OSCR_MARGIN
            and not self.derailed
        )

    def close(self, within: float) -> bool:
        """Within `within` of a target (either side): the list gets more training seeds."""
        return (
            abs(self.auroc - self.baseline_auroc - AUROC_MARGIN) < within
            or abs(self.oscr - self.baseline_oscr - OSCR_MARGIN) < within
        )

    def markdown(self) -> str:
        rows = [
            [f"mean AUROC >= strongest baseline + {AUROC_MARGIN}",
             f"{self.auroc:.3f} vs {self.baseline_auroc:.3f} ({self.baseline})",
             "yes" if self.auroc >= self.baseline_auroc + AUROC_MARGIN else "no"],
            [f"mean OSCR >= best baseline OSCR + {OSCR_MARGIN}", f"{self.oscr:.3f} vs {self.baseline_oscr:.3f}",
             "yes" if self.oscr >= self.baseline_oscr + OSCR_MARGIN else "no"],
            ["no derailed run", f"{self.derailed} of {len(self.runs)} derailed", "yes" if not self.derailed else "no"],
        ]  # fmt: skip
        return "\n" + markdown_table(["target (recommended model)", "measured", "met"], rows)


def target_check(
    known: list[str], runs: dict[str, dict[int, list[dict]]], derailed: dict[int, list[bool]], data_seeds: list[int]
) -> TargetCheck:
    names = [name for name in runs if name.startswith(BASELINE_PREFIX)]
    auroc = {name: seed_means(runs[name], "auroc", data_seeds).mean() for name in names}
    best = max(names, key=auroc.get)
    ours = runs[RECOMMENDED]
    per_seed_std = [np.std([run["auroc"] for run in ours[seed]], ddof=1) for seed in data_seeds if len(ours[seed]) > 1]
    return TargetCheck(
        known=known,
        auroc=float(seed_means(ours, "auroc", data_seeds).mean()),
        oscr=float(seed_means(ours, "oscr", data_seeds).mean()),
        baseline=best.removeprefix(BASELINE_PREFIX),
        baseline_auroc=float(auroc[best]),
        baseline_oscr=float(max(seed_means(runs[name], "oscr", data_seeds).mean() for name in names)),
        runs=[run["auroc"] for seed in data_seeds for run in ours[seed]],
        seed_std=float(np.mean(per_seed_std)) if per_seed_std else None,
        derailed=sum(sum(derailed.get(seed, [])) for seed in data_seeds),
    )


def lists_table(checks: list[TargetCheck]) -> str:
    """One row per known list: the recommended model's mean AUROC and OSCR against the strongest baseline, the worst
    run, the std over training seeds, the derailed runs and whether every target is met; then how many lists met."""
    header = ["known list", "AUROC: model vs strongest baseline", "OSCR: model vs best baseline", "worst run AUROC",
              "std over training seeds", "derailed runs", "targets met"]  # fmt: skip
    rows = [
        [", ".join(c.known), f"{c.auroc:.3f} vs {c.baseline_auroc:.3f} ({c.auroc - c.baseline_auroc:+.3f}, {c.baseline})",
         f"{c.oscr:.3f} vs {c.baseline_oscr:.3f} ({c.oscr - c.baseline_oscr:+.3f})", f"{min(c.runs):.3f}",
         "—" if c.seed_std is None else f"{c.seed_std:.3f}", f"{c.derailed} of {len(c.runs)}", "yes" if c.met() else "no"]
        for c in checks
    ]  # fmt: skip
    met = sum(c.met() for c in checks)
    derailed = sum(c.derailed for c in checks)
    runs = sum(len(c.runs) for c in checks)
    return (
        markdown_table(header, rows)
        + f"\n{met} of {len(checks)} lists meet every target (AUROC >= strongest baseline + {AUROC_MARGIN}, OSCR >= "
        f"best baseline OSCR + {OSCR_MARGIN}, no derailed run); {derailed} of {runs} runs derailed.\n"
    )


if __name__ == "__main__":
    main()
