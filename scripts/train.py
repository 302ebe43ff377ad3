"""Train HESP on one open-set split with the `Trainer`, calibrate the unknown threshold, evaluate on the test set.

The code is `hesp_hf/commands/train.py`; installed, the same command is `hesp-train` (`hesp-train --help`).
"""

from hesp_hf.commands.train import cli


if __name__ == "__main__":
    cli()
