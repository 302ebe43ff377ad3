"""The Hugging Face Hub: pushing a finished run (`upload`) and the model card it carries (`model_card`)."""

from .upload import check_hub_access, push_folder


__all__ = ["check_hub_access", "push_folder"]
