"""HESP model definition files: the single source of truth, installed as `hesp_hf.modeling` and copied flat into
every saved checkpoint so it loads with `trust_remote_code=True` where `hesp_hf` is not installed."""
