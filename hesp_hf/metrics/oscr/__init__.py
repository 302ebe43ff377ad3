"""The OSCR `evaluate` module; `evaluate.load` reads `oscr.py` from this folder."""
