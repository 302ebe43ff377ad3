"""Run the paper's protocol: one training per open-set split, then mean ± std ACC / AUROC / OSCR per setting.

    python scripts/run_protocol.py --output_dir runs/mafw --splits 0-19 -- \
        --dataset mafw --data_root MAFW --clip_model openai/clip-vit-base-patch32

Everything after `--` goes to `scripts/train.py` unchanged (add `--split_index` there never: the protocol sets it).
Each split trains in its own process into `<output_dir>/split-<i>/`, which records the train.py arguments it ran with
(`protocol_arguments.json`). A split whose `metrics.json` exists is reused when those arguments are the ones given now,
so an interrupted protocol resumes where it stopped; with other arguments it is refused, naming the splits, unless
`--rerun_changed` trains them again. The per-split results are kept, and the table is written as
`results.md` and `results.csv` (settings are the released lists' openness levels: splits 0-4, 5-9, 10-14, 15-19).
"""

import _unshadow  # noqa: F401, I001  (first: keeps scripts/evaluate.py from shadowing `evaluate`)


import argparse
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hesp_hf.atomic_files import write_text_atomic
from hesp_hf.cli import ArgumentParser, run_command


TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"
METRICS = ("accuracy", "auroc", "oscr")
ARGUMENTS_FILE = "protocol_arguments.json"


def parse_splits(text: str) -> list[int]:
    splits: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        splits.extend(range(int(low), int(high or low) + 1))
    return splits


def finished_with_other_arguments(split_dir: Path, train_args: list[str]) -> list[str] | None:
    """The arguments a finished split ran with, when they differ from `train_args` (an unrecorded one counts as
    different); None when the split is unfinished or matches."""
    if not (split_dir / "metrics.json").exists():
        return None
    try:
        recorded = json.loads((split_dir / ARGUMENTS_FILE).read_text())["train_arguments"]
    except (OSError, ValueError, KeyError):
        return ["(not recorded)"]
    return None if recorded == train_args else recorded


def setting_of(split_index: int) -> str:
    """The released lists come in settings of 5 splits with the same number of known classes."""
    return f"splits {5 * (split_index // 5)}-{5 * (split_index // 5) + 4}"


def summarize(results: dict[int, dict]) -> tuple[str, str]:
    """Markdown and CSV tables: per setting, mean ± std (over its splits) of each metric, in percent."""
    settings: dict[str, list[dict]] = {}
    for index in sorted(results):
        settings.setdefault(setting_of(index), []).append(results[index])
    header = ["setting", "known/unknown", "splits", *[f"{m} (mean ± std, %)" for m in METRICS]]
    rows = []
    for setting, items in settings.items():
        known = items[0].get("split", "").split(": ")[-1]
        cells = []
        for metric in METRICS:
            values = 100 * np.array([item[metric] for item in items])
            cells.append(f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}")
        rows.append([setting, known, str(len(items)), *cells])
    markdown = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["split", "setting", *METRICS])
    for index in sorted(results):
        writer.writerow([index, setting_of(index), *[results[index][m] for m in METRICS]])
    return markdown + "\n", buffer.getvalue()


def main() -> None:
    if "--" not in sys.argv:
        raise SystemExit("Usage: run_protocol.py --output_dir DIR [--splits 0-19] -- <train.py arguments>")
    cut = sys.argv.index("--")
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--splits", default="0-19", help="split indices, e.g. 0-4 or 0,5,10")
    parser.add_argument(
        "--rerun_changed", action="store_true", help="train again the finished splits whose arguments differ"
    )
    args = parser.parse_args(sys.argv[1:cut])
    train_args = sys.argv[cut + 1 :]
    if any(a.startswith(("--split_index", "--output_dir")) for a in train_args):
        raise SystemExit("run_protocol sets --split_index and --output_dir itself; leave them out after '--'.")
    splits = parse_splits(args.splits)
    changed = {
        index: recorded
        for index in splits
        if (recorded := finished_with_other_arguments(args.output_dir / f"split-{index}", train_args))
    }
    if changed and not args.rerun_changed:
        index, recorded = next(iter(changed.items()))
        raise ValueError(
            f"splits {sorted(changed)} in {args.output_dir} finished with other train.py arguments (split {index}: "
            f"{' '.join(recorded)!r}, now {' '.join(train_args)!r}): pass --rerun_changed to train them again with "
            "the new ones, or another --output_dir."
        )
    results: dict[int, dict] = {}
    for index in tqdm(splits, desc="protocol", unit="split"):
        split_dir = args.output_dir / f"split-{index}"
        metrics_file = split_dir / "metrics.json"
        if index in changed or not metrics_file.exists():
            write_text_atomic(split_dir / ARGUMENTS_FILE, json.dumps({"train_arguments": train_args}, indent=2))
            command = [sys.executable, str(TRAIN_SCRIPT), *train_args, "--split_index", str(index)]
            # An unfinished or changed split folder is this protocol's own: replaced.
            subprocess.run([*command, "--output_dir", str(split_dir), "--overwrite_output_dir"], check=True)
        results[index] = json.loads(metrics_file.read_text())
        tqdm.write(f"split {index}: " + ", ".join(f"{m}={results[index][m]:.4f}" for m in METRICS))
    markdown, table = summarize(results)
    write_text_atomic(args.output_dir / "results.md", markdown)
    write_text_atomic(args.output_dir / "results.csv", table)
    print(markdown)


if __name__ == "__main__":
    run_command(main)
