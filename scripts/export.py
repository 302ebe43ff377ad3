"""Export a trained HESP checkpoint for inference (inference-only checkpoint, or ONNX with --onnx).

The code is `hesp_hf/commands/export.py`; installed, the same command is `hesp-export` (`hesp-export --help`).
"""

from hesp_hf.commands.export import cli


if __name__ == "__main__":
    cli()
