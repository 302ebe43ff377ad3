"""Train HESP on one open-set split with the `Trainer`, calibrate the unknown threshold, evaluate on the test set.

    python scripts/train.py --dataset mafw --data_root MAFW --split_index 0 --clip_model openai/clip-vit-base-patch32 \
        --output_dir runs/mafw-0
    accelerate launch --multi_gpu --num_processes 8 scripts/train.py ...   # DDP over 8 GPUs

The output folder ends with the model, processor and `modeling/` code files (loadable with trust_remote_code=True),
`metrics.json` (test accuracy / auroc / oscr ...), `curves.png`, `confusion.csv`, `split.txt` and a model card.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hesp_hf.commands.cli import DataclassArgumentParser, run_command
from hesp_hf.run.arguments import DataArguments, HESPTrainingArguments, ModelArguments
from hesp_hf.run.train import TrainingRun, run


def parse_training_options(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, HESPTrainingArguments]:
    """The command line (`argv`, else `sys.argv`) parsed once into the three typed option groups."""
    parser = DataclassArgumentParser((ModelArguments, DataArguments, HESPTrainingArguments))
    return parser.parse_args_into_dataclasses(args=None if argv is None else list(argv))


def train_from_argv(argv: Sequence[str]) -> TrainingRun:
    """`hesp_hf.train` from `scripts/train.py`'s command-line arguments (as the script parses them)."""
    return run(*parse_training_options(argv))


def options_argv(options: Mapping[str, Any]) -> list[str]:
    """`hesp_hf.train` options as `scripts/train.py` arguments (`["--name", "value", ...]`: lists as several values,
    booleans as true/false, None left out), for running the same training as a script."""
    argv: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        argv += [f"--{name}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return argv


def main() -> None:
    model_args, data_args, training_args = parse_training_options()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    run(model_args, data_args, training_args)  # returns on every process together, the run written
    import torch.distributed as distributed

    if distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()  # leave the group cleanly before the interpreter exits


def cli() -> None:
    """The `hesp-train` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
