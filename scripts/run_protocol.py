"""Run the paper's protocol: one training per open-set split, then mean ± std ACC / AUROC / OSCR per setting.

The code is `hesp_hf/commands/protocol.py`; installed, the same command is `hesp-protocol` (`hesp-protocol --help`).
"""

from hesp_hf.commands.protocol import cli


if __name__ == "__main__":
    cli()
