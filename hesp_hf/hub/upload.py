"""The Hugging Face Hub: what `--push_to_hub` needs, checked before training, and the upload of a finished folder."""

import logging
from pathlib import Path

from transformers import TrainingArguments


logger = logging.getLogger(__name__)


def check_hub_access(training_args: TrainingArguments) -> None:
    """What `--push_to_hub` needs, checked before training rather than after it: a repository id, the Hub allowed,
    and a token."""
    if not training_args.push_to_hub:
        return
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. org/hesp-dfew).")
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ValueError(
            "--push_to_hub with HF_HUB_OFFLINE set: the upload would fail after training. Train without it and push "
            "the finished folder later with `python scripts/push_to_hub.py --folder <output_dir> --hub_model_id ...`."
        )
    if not (training_args.hub_token or get_token()):
        raise ValueError("--push_to_hub needs a Hub token: `hf auth login`, HF_TOKEN, or --hub_token.")


def push_folder(output_dir: Path, hub_model_id: str, token: str | None = None, private: bool = False) -> None:
    """Upload a finished folder (model, processor, code, card, metrics) to `hub_model_id`; checkpoints, logs and
    the training-state files with local paths stay behind.

    The one upload path, for `--push_to_hub` at the end of training and for `hesp-push` on any finished folder.
    Not `Trainer.push_to_hub`: it needs the live Trainer (no use for a folder trained earlier or offline), pushes at
    every save with `hub_strategy`, and writes the Trainer's own model card over the open-set card (README.md)."""
    from huggingface_hub import HfApi

    output_dir = Path(output_dir)
    if not (output_dir / "config.json").exists():
        raise ValueError(f"{output_dir} holds no trained model (config.json): nothing to push.")
    if (output_dir / "trainer_state.json").exists() or (output_dir / "optimizer.pt").exists():
        raise ValueError(
            f"{output_dir} is a Trainer checkpoint (optimizer state, no calibrated unknown threshold, no model card): "
            "push the finished run folder that holds it."
        )
    api = HfApi(token=token)
    api.create_repo(hub_model_id, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=hub_model_id,
        folder_path=str(output_dir),
        ignore_patterns=["checkpoint-*", "runs/*", "*.tsv", "training_args.bin", "run_arguments.json"],
        commit_message="Upload HESP model trained with hesp-hf",
    )
    logger.info("Pushed %s to the Hub as %s", output_dir, hub_model_id)
