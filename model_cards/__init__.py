"""Model card templates, installed as `hesp_hf.model_cards`."""
