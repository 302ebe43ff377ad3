"""Running an ONNX export (`hesp_hf.export.export_onnx`) with ONNX Runtime, in the model's calling convention, so
that the batch predictor and user code take it in place of the PyTorch model.

    classifier = ONNXVideoClassifier("hesp-dfew-onnx")
    output = classifier(pixel_values_videos=processor(["a.mp4", "b.mp4"], return_tensors="pt").pixel_values_videos)
    output.logits, output.open_set_score  # torch tensors, as from HESPForOpenSetVideoClassification
"""

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..modeling.configuration_hesp import HESPConfig
from ..modeling.modeling_hesp import HESPVideoClassifierOutput


ONNX_FILE = "model.onnx"
PRECISION_KEY = "hesp_precision"  # graph metadata: "int8" for `export_int8`'s graphs; absent (float32) otherwise


def require_onnx() -> None:
    """Raise one line naming the extra when the packages an ONNX export needs are missing."""
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"The ONNX export needs {', '.join(missing)}: install the extra with `pip install hesp-hf[onnx]`."
        )


def is_onnx_export(folder: str | Path) -> bool:
    return (Path(folder) / ONNX_FILE).is_file()


class ONNXVideoClassifier:
    """An ONNX export folder (`model.onnx`, its weights, `config.json`) run with ONNX Runtime on the CPU (or CUDA,
    where onnxruntime-gpu provides it). `threads`: intra-op threads (default: ONNX Runtime's choice). `spinning`:
    whether idle pool threads busy-wait for the next piece of work (ONNX Runtime's default); off where other work
    (decoding) shares the cores, whose time the spinning would take. `precision`: "fp32" or "int8" (`export_int8`)."""

    def __init__(
        self,
        folder: str | Path,
        threads: int | None = None,
        providers: list[str] | None = None,
        spinning: bool = True,
    ):
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError("Running an ONNX export needs onnxruntime: `pip install hesp-hf[onnx]`.") from error
        folder = Path(folder)
        if not is_onnx_export(folder):
            raise FileNotFoundError(f"{folder} holds no {ONNX_FILE}: export one with hesp_hf.export.export_onnx.")
        self.folder = folder
        self.config = HESPConfig.from_pretrained(folder)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = onnxruntime.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), options, providers=providers)
        self.precision: str = self.session.get_modelmeta().custom_metadata_map.get(PRECISION_KEY, "fp32")

    def __call__(self, pixel_values_videos: torch.Tensor | np.ndarray, **_: Any) -> HESPVideoClassifierOutput:
        pixels = pixel_values_videos
        if isinstance(pixels, torch.Tensor):
            pixels = pixels.detach().to("cpu", torch.float32).numpy()
        logits, score = self.session.run(["logits", "open_set_score"], {"pixel_values_videos": pixels})
        return HESPVideoClassifierOutput(logits=torch.from_numpy(logits), open_set_score=torch.from_numpy(score))

    # The predictor's calls on a torch model, which mean nothing here.
    def to(self, *_: Any, **__: Any) -> "ONNXVideoClassifier":
        return self

    def eval(self) -> "ONNXVideoClassifier":
        return self
