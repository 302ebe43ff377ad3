"""Push a finished training folder to the Hub (what `scripts/train.py --push_to_hub` does at the end of a run).

    python scripts/push_to_hub.py --folder runs/mafw-0 --hub_model_id org/hesp-mafw-0 [--private] [--token ...]

Checkpoints, logs, `training_args.bin` and `run_arguments.json` (they hold local paths) stay behind.
"""

import argparse
import logging
from pathlib import Path

from hesp_hf.commands.cli import ArgumentParser, run_command
from hesp_hf.hub.upload import push_folder


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="a finished scripts/train.py output folder")
    parser.add_argument("--hub_model_id", required=True, help="owner/name on the Hub")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one or HF_TOKEN)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    push_folder(args.folder, args.hub_model_id, args.token, args.private)


def cli() -> None:
    """The `hesp-push` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
