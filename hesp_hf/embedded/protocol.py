"""Command-line pieces shared by the quality scripts: which synthetic data sets, splits and seeds a table covers."""

import argparse
import random
from pathlib import Path

from ..run.arguments import comma_items
from .defaults import DEMO_KNOWN
from .synthetic import CLASSES


def add_protocol_arguments(parser: argparse.ArgumentParser, output_dir: str, several_lists: bool = False) -> None:
    """Data seeds, training seeds, the known classes, the run length and the folders of a quality table
    (`several_lists`: `--random_known` takes several seeds, one known list each)."""
    parser.add_argument("--data_seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train_seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--known", default=",".join(DEMO_KNOWN), help="known classes, comma-separated")
    parser.add_argument(
        "--random_known",
        type=int,
        nargs="+" if several_lists else None,
        metavar="SEED",
        help="instead of --known: 6 known classes drawn at random with this seed (printed with the table)"
        + ("; several seeds: one list each" if several_lists else ""),
    )
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--train_per_class", type=int, default=30)
    parser.add_argument("--output_dir", type=Path, default=Path(output_dir))
    parser.add_argument("--data_dir", type=Path, default=Path("outputs/synthetic"))


def random_known(seed: int, count: int = len(DEMO_KNOWN)) -> list[str]:
    """`count` synthetic classes drawn without replacement by `random.Random(seed)`, in class order."""
    drawn = set(random.Random(seed).sample(CLASSES, count))
    return [name for name in CLASSES if name in drawn]


def protocol_splits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[list[str], Path]]:
    """`protocol_split` of each list asked for: one per `--random_known` seed (several with `several_lists`), else
    `--known`'s."""
    seeds = getattr(args, "random_known", None)
    if not isinstance(seeds, list):
        return [protocol_split(parser, args)]
    return [split_of(parser, args.output_dir, random_known(seed)) for seed in seeds]


def protocol_split(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], Path]:
    """The known classes of `--known` (a usage error when they are not 2..10 distinct synthetic classes) and the
    results folder of that split: `<output_dir>/demo-split` or `<output_dir>/known-<sorted names>`."""
    known = comma_items(args.known)
    if getattr(args, "random_known", None) is not None:
        known = random_known(args.random_known)
    return split_of(parser, args.output_dir, known)


def split_of(parser: argparse.ArgumentParser, output_dir: Path, known: list[str]) -> tuple[list[str], Path]:
    """`known` checked (a usage error when not 2..10 distinct synthetic classes) and its results folder."""
    if (
        any(name not in CLASSES for name in known)
        or len(set(known)) != len(known)
        or not 2 <= len(known) < len(CLASSES)
    ):
        parser.error(f"--known must name 2..{len(CLASSES) - 1} distinct classes of {CLASSES}, got {known}.")
    name = "demo-split" if set(known) == set(DEMO_KNOWN) else "known-" + "-".join(sorted(known))
    return known, output_dir / name
