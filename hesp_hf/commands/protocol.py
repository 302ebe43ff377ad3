"""Run the paper's protocol: one training per open-set split, then mean ± std ACC / AUROC / OSCR per setting.

    python scripts/run_protocol.py --output_dir runs/mafw --splits 0-19 -- \
        --dataset mafw --data_root MAFW --clip_model openai/clip-vit-base-patch32

Everything after `--` goes to `scripts/train.py` unchanged (add `--split_index` / `--known_labels` there never: the
protocol sets them). Presets run their released lists (`--splits`); any dataset, custom data included, can instead run
its own lists of known classes: `--known_lists FILE` (one split per line, class names comma-separated), or
`--random_splits N --num_known K [--split_seed S]` (N seeded random choices of K of the `--class_names` given to
train.py); their table groups the splits by the number of known classes.
Each split trains in its own process into `<output_dir>/split-<i>/`, which records the train.py arguments it ran with
(`protocol_arguments.json`). A split whose `metrics.json` exists is reused when those arguments are the ones given now,
so an interrupted protocol goes on from its first unfinished split (which trains again from its start: its
checkpoints are not resumed); with other arguments it is refused, naming the splits, unless
`--rerun_changed` trains them again. The per-split results are kept, and the table is written as
`results.md` and `results.csv` (settings are the released lists' openness levels: splits 0-4, 5-9, 10-14, 15-19).
"""

import argparse
import csv
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hesp_hf.atomic_files import write_text_atomic
from hesp_hf.commands.cli import ArgumentParser, run_command
from hesp_hf.data.presets import PRESETS
from hesp_hf.evaluation.report import METRICS, markdown_table, mean_std
from hesp_hf.run.arguments import comma_items


ARGUMENTS_FILE = "protocol_arguments.json"
logger = logging.getLogger(__name__)


def parse_splits(text: str) -> list[int]:
    """`--splits` ("0-4", "0,5,10", "0-2,7") as split indices, in the order given, without repeats."""
    splits: list[int] = []
    for part in comma_items(text):
        low, dash, high = part.partition("-")
        if not low.strip().isdigit() or (dash and not high.strip().isdigit()) or (dash and int(high) < int(low)):
            raise ValueError(f"--splits: '{part}' is neither a split index nor a rising range (e.g. 0-4 or 0,5,10).")
        splits.extend(i for i in range(int(low), int(high or low) + 1) if i not in splits)
    if not splits:
        raise ValueError(f"--splits names no split: {text!r} (e.g. 0-19, 0-4 or 0,5,10).")
    return splits


def check_released_splits(splits: list[int], train_args: list[str]) -> None:
    """Before any split trains: the indices exist among the released lists of train.py's `--dataset`, so a typo in
    the last index does not fail hours later."""
    dataset, _ = dataset_classes(train_args)
    if dataset is None:
        return  # train.py itself refuses it, naming the choices
    count = len(PRESETS[dataset].open_set_splits) if dataset in PRESETS else 0
    if count == 0:
        raise ValueError(
            f"'{dataset}' has no released open-set lists: give the known classes with --known_lists or "
            "--random_splits (with --num_known)."
        )
    outside = [index for index in splits if index >= count]
    if outside:
        raise ValueError(f"--splits {outside} are not released lists of '{dataset}': it has splits 0-{count - 1}.")


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


def random_known_lists(class_names: list[str], count: int, num_known: int, seed: int) -> list[list[str]]:
    """`count` distinct seeded random choices of `num_known` classes (each in index order)."""
    if not 1 <= num_known < len(class_names):
        raise ValueError(f"--num_known must lie in 1..{len(class_names) - 1} for {len(class_names)} classes.")
    rng = np.random.default_rng(seed)
    lists: list[list[str]] = []
    for _ in range(1000 * count):
        chosen = sorted(rng.choice(len(class_names), num_known, replace=False).tolist())
        if [class_names[i] for i in chosen] not in lists:
            lists.append([class_names[i] for i in chosen])
        if len(lists) == count:
            return lists
    raise ValueError(
        f"There are fewer than {count} distinct ways to choose {num_known} of {len(class_names)} classes."
    )


def known_lists_from(args: argparse.Namespace, train_args: list[str]) -> list[list[str]] | None:
    """The custom known-class lists asked for (`--known_lists`, `--random_splits`), or None for released lists."""
    if args.known_lists:
        lines = [line.strip() for line in args.known_lists.read_text().splitlines()]
        lists = [comma_items(line) for line in lines if line]
        check_known_lists(lists, args.known_lists, train_args)
        return lists
    if args.random_splits:
        names = option_values(train_args, "--class_names") or dataset_classes(train_args)[1]
        if not names:
            raise ValueError(
                "--random_splits needs --class_names (all classes, index order) among train.py's arguments."
            )
        return random_known_lists(names, args.random_splits, args.num_known, args.split_seed)
    return None


def check_protocol_options(args: argparse.Namespace) -> None:
    """Options that would be ignored together, or counts below zero, refused before any split trains."""
    for name in ("random_splits", "num_known"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be a count >= 0, got {getattr(args, name)}.")
    if args.known_lists and args.random_splits:
        raise ValueError("--known_lists and --random_splits both choose the known classes: give one of them.")
    if (args.known_lists or args.random_splits) and args.splits is not None:
        raise ValueError(
            "--splits picks released lists; with --known_lists or --random_splits every list is run: leave it out."
        )
    if args.num_known and not args.random_splits:
        raise ValueError("--num_known sets the size of --random_splits lists; give --random_splits too.")


def check_known_lists(lists: list[list[str]], source: Path, train_args: list[str]) -> None:
    """Every name of a `--known_lists` file is a class of train.py's dataset, once per line."""
    if not lists:
        raise ValueError(f"{source} holds no known-class list (one per line, names separated by commas).")
    dataset, classes = dataset_classes(train_args)
    for number, names in enumerate(lists, start=1):
        unknown = [name for name in names if classes and name not in classes]
        if unknown or len(set(names)) != len(names):
            problem = (
                f"{unknown} are not classes of '{dataset}' ({', '.join(classes or [])})"
                if unknown
                else ("a class is named twice")
            )
            raise ValueError(f"{source}, list {number} ({', '.join(names)}): {problem}.")


def dataset_classes(train_args: list[str]) -> tuple[str | None, list[str]]:
    """train.py's `--dataset` (None when missing or not a choice: train.py names the choices itself) and its classes
    in index order: a preset's own, a custom dataset's `--class_names`."""
    given = option_values(train_args, "--dataset")
    dataset = given[0] if given and given[0] in (*PRESETS, "custom") else None
    if option_values(train_args, "--dataset_name"):  # a datasets dataset: its own classes, read once here
        return dataset or option_values(train_args, "--dataset_name")[0], datasets_classes(train_args)
    if dataset in PRESETS:
        return dataset, list(PRESETS[dataset].class_names)
    return dataset, option_values(train_args, "--class_names") if dataset == "custom" else []


def datasets_classes(train_args: list[str]) -> list[str]:
    """The classes of train.py's `--dataset_name` dataset in label order (its train and test splits' labels)."""
    from hesp_hf.commands.train import parse_training_options
    from hesp_hf.data.hf_datasets import dataset_class_names
    from hesp_hf.run.setup import dataset_source

    _, data_args, _ = parse_training_options([*train_args, "--output_dir", "unused"])
    source = dataset_source(data_args)
    if data_args.dataset in PRESETS:
        return list(PRESETS[data_args.dataset].class_names)
    return dataset_class_names(source, data_args.class_names)


def option_values(arguments: list[str], option: str) -> list[str]:
    """The values `option` has in train.py's `arguments`: `--class_names a b c`, `--class_names a,b,c` or
    `--class_names=a,b,c` (the last given wins, as argparse does)."""
    values: list[str] = []
    for index, argument in enumerate(arguments):
        if argument == option:
            following = arguments[index + 1 :]
            ends = next((i for i, value in enumerate(following) if value.startswith("--")), len(following))
            values = comma_items(following[:ends])
        elif argument.startswith(option + "="):
            values = comma_items(argument.partition("=")[2])
    return values


def setting_of(split_index: int) -> str:
    """The released lists come in settings of 5 splits with the same number of known classes."""
    return f"splits {5 * (split_index // 5)}-{5 * (split_index // 5) + 4}"


def derailed(metrics: dict) -> bool | None:
    """Whether a split's training derailed (`training_health` in its metrics.json); None when not recorded."""
    health = metrics.get("training_health")
    return None if not isinstance(health, dict) else bool(health.get("derailed"))


def summarize(results: dict[int, dict], setting: dict[int, str] | None = None) -> tuple[str, str]:
    """Markdown and CSV tables: per setting (the released lists' groups of 5, or `setting[index]`), mean ± std (over
    its splits) of each metric, in percent, and how many of its runs derailed; the splits that derailed are named
    below the table."""
    setting = setting or {index: setting_of(index) for index in results}
    settings: dict[str, list[dict]] = {}
    for index in sorted(results):
        settings.setdefault(setting[index], []).append(results[index])
    header = ["setting", "known/unknown", "splits", *[f"{m} (mean ± std, %)" for m in METRICS], "derailed runs"]
    rows = []
    for name, items in settings.items():
        known = items[0].get("split", "").split(": ")[-1]
        cells = []
        for metric in METRICS:
            cells.append(mean_std([100 * item[metric] for item in items], 2))
        flags = [derailed(item) for item in items]
        recorded = [flag for flag in flags if flag is not None]
        count = f"{sum(recorded)} of {len(recorded)}" + (
            f" ({len(flags) - len(recorded)} not recorded)" if len(recorded) < len(flags) else ""
        )
        rows.append([name, known, str(len(items)), *cells, count])
    markdown = markdown_table(header, rows)
    failed = [index for index in sorted(results) if derailed(results[index])]
    if failed:
        reasons = "; ".join(f"split {i}: {results[i]['training_health']['reason']}" for i in failed)
        markdown += f"\nTraining derailed on {len(failed)} split(s) ({reasons}).\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["split", "setting", *METRICS, "derailed"])
    for index in sorted(results):
        flag = derailed(results[index])
        writer.writerow([index, setting[index], *[results[index][m] for m in METRICS], "" if flag is None else flag])
    return markdown, buffer.getvalue()


def main() -> None:
    cut = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--splits", help="released split indices, e.g. 0-4 or 0,5,10 (default: 0-19)")
    parser.add_argument("--known_lists", type=Path, help="a file: one split per line, known class names")
    parser.add_argument("--random_splits", type=int, default=0, help="this many seeded random known-class lists")
    parser.add_argument("--num_known", type=int, default=0, help="known classes per random list")
    parser.add_argument("--split_seed", type=int, default=0, help="seed of the random lists")
    parser.add_argument(
        "--rerun_changed", action="store_true", help="train again the finished splits whose arguments differ"
    )
    args = parser.parse_args(sys.argv[1:cut])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if cut == len(sys.argv):
        parser.error("the train.py arguments go after `--`: --output_dir DIR [--splits 0-19] -- <train.py arguments>")
    train_args = sys.argv[cut + 1 :]
    if any(a.startswith(("--split_index", "--known_labels", "--output_dir")) for a in train_args):
        raise SystemExit(
            "run_protocol sets --split_index / --known_labels and --output_dir; leave them out after '--'."
        )
    check_protocol_options(args)
    known_lists = known_lists_from(args, train_args)
    if known_lists is None:
        splits = parse_splits(args.splits or "0-19")
        check_released_splits(splits, train_args)
        split_arguments = {index: ["--split_index", str(index)] for index in splits}
        setting = {index: setting_of(index) for index in splits}
    else:
        splits = list(range(len(known_lists)))
        split_arguments = {index: ["--known_labels", ",".join(known)] for index, known in enumerate(known_lists)}
        setting = {index: f"{len(known)} known" for index, known in enumerate(known_lists)}
    changed = {
        index: recorded
        for index in splits
        if (
            recorded := finished_with_other_arguments(
                args.output_dir / f"split-{index}", [*train_args, *split_arguments[index]]
            )
        )
    }
    if changed and not args.rerun_changed:
        index, recorded = next(iter(changed.items()))
        raise ValueError(
            f"splits {sorted(changed)} in {args.output_dir} finished with other train.py arguments (split {index}: "
            f"{' '.join(recorded)!r}, now {' '.join([*train_args, *split_arguments[index]])!r}): pass "
            "--rerun_changed to train them again with "
            "the new ones, or another --output_dir."
        )
    results: dict[int, dict] = {}
    for index in tqdm(splits, desc="protocol", unit="split"):
        split_dir = args.output_dir / f"split-{index}"
        metrics_file = split_dir / "metrics.json"
        arguments = [*train_args, *split_arguments[index]]
        if index in changed or not metrics_file.exists():
            write_text_atomic(split_dir / ARGUMENTS_FILE, json.dumps({"train_arguments": arguments}, indent=2))
            command = [sys.executable, "-m", "hesp_hf.commands.train", *arguments]
            # An unfinished or changed split folder is this protocol's own: replaced.
            done = subprocess.run([*command, "--output_dir", str(split_dir), "--overwrite_output_dir"])
            if done.returncode != 0:
                raise SystemExit(
                    f"split {index} failed (train.py exit status {done.returncode}; its output is above). Finished "
                    f"splits are kept in {args.output_dir}; the same command goes on from split {index}."
                )
        results[index] = json.loads(metrics_file.read_text())
        tqdm.write(f"split {index}: " + ", ".join(f"{m}={results[index][m]:.4f}" for m in METRICS))
    markdown, table = summarize(results, setting)
    write_text_atomic(args.output_dir / "results.md", markdown)
    write_text_atomic(args.output_dir / "results.csv", table)
    logger.info("%s", markdown)


def cli() -> None:
    """The `hesp-protocol` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
