"""What the command-line scripts share: options that must be spelled out (no prefix matching), a typo answered in
two lines instead of the whole usage, and a user error (a bad flag value, a missing file, a broken annotation or clip)
reported as one line and exit status 2. `HESP_DEBUG=1` shows the traceback instead."""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import HfArgumentParser


# Errors that describe what the user asked for; anything else is a bug and keeps its traceback. OSError: a path
# that is neither a folder nor a Hub name ("couldn't connect to huggingface.co"), a folder without a model;
# ImportError: an optional extra that is not installed (the messages name it); the strict-dataclass errors: a
# config value out of range (`--num_frames 0`, a config.json edited by hand), raised by HESPConfig's validators.
CONFIG_ERRORS = (StrictDataclassClassValidationError, StrictDataclassFieldValidationError)
USER_ERRORS = (ValueError, OSError, ImportError, *CONFIG_ERRORS)


class _ShortErrors:
    def error(self, message: str):  # argparse's hook: called for unknown flags, bad values, missing options
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists every option)\n")


class ArgumentParser(_ShortErrors, argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class DataclassArgumentParser(_ShortErrors, HfArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def run_command(main: Callable[[], Any]) -> None:
    """Run a script's `main`, turning user errors into one line on stderr and exit status 2."""
    try:
        main()
    except USER_ERRORS as error:
        if os.environ.get("HESP_DEBUG"):
            raise
        name = Path(sys.argv[0]).name
        if isinstance(error, CONFIG_ERRORS) and error.__cause__ is not None:
            error = error.__cause__  # the validator's own sentence, without the wrapper's "validator '...'" line
        sys.stderr.write(f"{name}: error: {error}\n(set HESP_DEBUG=1 to see where it was raised)\n")
        sys.exit(2)
