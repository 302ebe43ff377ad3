"""Predict every clip of a folder, glob, list file or CSV with a trained HESP checkpoint (JSONL or CSV rows).

The code is `hesp_hf/commands/predict.py`; installed, the same command is `hesp-predict` (`hesp-predict --help`).
"""

from hesp_hf.commands.predict import cli


if __name__ == "__main__":
    cli()
