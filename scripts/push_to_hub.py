"""Push a finished training folder to the Hub (what `scripts/train.py --push_to_hub` does at the end of a run).

The code is `hesp_hf/commands/push.py`; installed, the same command is `hesp-push` (`hesp-push --help`).
"""

import _unshadow  # noqa: F401, I001  (first: keeps scripts/evaluate.py from shadowing `evaluate`)

from hesp_hf.commands.push import cli


if __name__ == "__main__":
    cli()
