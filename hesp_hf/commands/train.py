"""Train HESP on one open-set split with the `Trainer`, calibrate the unknown threshold, evaluate on the test set.

    python scripts/train.py --dataset mafw --data_root MAFW --split_index 0 --clip_model openai/clip-vit-base-patch32 \
        --output_dir runs/mafw-0
    accelerate launch --multi_gpu --num_processes 8 scripts/train.py ...   # DDP over 8 GPUs

The output folder ends with the model, processor and `modeling/` code files (loadable with trust_remote_code=True),
`metrics.json` (test accuracy / auroc / oscr ...), `curves.png`, `confusion.csv`, `split.txt` and a model card.
"""

import logging

from hesp_hf.arguments import DataArguments, HESPTrainingArguments, ModelArguments
from hesp_hf.cli import DataclassArgumentParser, run_command
from hesp_hf.recipe import run


def main() -> None:
    parser = DataclassArgumentParser((ModelArguments, DataArguments, HESPTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    run(model_args, data_args, training_args)


def cli() -> None:
    """The `hesp-train` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
