"""`make demo`: the offline demo end to end (synthetic faces, training, evaluation, the pipeline).

The code is `hesp_hf/commands/demo.py`; installed, the same command is `hesp-demo` (`hesp-demo --help`).
"""

from hesp_hf.commands.demo import cli


if __name__ == "__main__":
    cli()
