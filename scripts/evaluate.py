"""Evaluate a saved HESP checkpoint (folder or Hub id) on the test set of an open-set split.

The code is `hesp_hf/commands/evaluate.py`; installed, the same command is `hesp-evaluate` (`hesp-evaluate --help`).
"""

import _unshadow  # noqa: F401, I001  (first: keeps scripts/evaluate.py from shadowing `evaluate`)

from hesp_hf.commands.evaluate import cli


if __name__ == "__main__":
    cli()
