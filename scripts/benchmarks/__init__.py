"""The benchmark sections of `scripts/benchmark.py`, one module per concern, each a `run(settings)` returning its
table rows and ratio keys; `harness` holds what they share (settings, timing, device, output)."""
