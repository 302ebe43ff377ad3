"""Evaluate a saved HESP checkpoint (folder or Hub id) on the test set of an open-set split.

The code is `hesp_hf/commands/evaluate.py`; installed, the same command is `hesp-evaluate` (`hesp-evaluate --help`).
"""

from hesp_hf.commands.evaluate import cli


if __name__ == "__main__":
    cli()
