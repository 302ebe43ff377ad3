"""Imported first by every script here: `scripts/evaluate.py` would otherwise shadow the `evaluate` package, since
Python puts the running script's folder at the front of `sys.path`."""

import sys
from pathlib import Path


_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
