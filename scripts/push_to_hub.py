"""Push a finished training folder to the Hub (what `scripts/train.py --push_to_hub` does at the end of a run).

The code is `hesp_hf/commands/push.py`; installed, the same command is `hesp-push` (`hesp-push --help`).
"""

from hesp_hf.commands.push import cli


if __name__ == "__main__":
    cli()
