"""One entry point that loads any deployment form of a trained checkpoint for prediction, in the model's calling
convention: what `hesp-predict` uses, and what other code that predicts from exports should call.

    model, processor = load_for_prediction("runs/dfew-1", precision="bf16")     # PyTorch, bfloat16 tower
    model, processor = load_for_prediction("runs/dfew-1-int8")                  # an int8 export (ONNX Runtime)
    output = model(pixel_values_videos=processor(clips, return_tensors="pt").pixel_values_videos)
    output.logits, output.open_set_score  # float32 tensors in every form

The forms (speed, memory and agreement of each: docs/performance.md):
- a trained folder or Hub id, `precision="fp32"`: the model as trained; `inference_only=True` drops the text side.
- `precision="bf16"`: the frozen CLIP image tower's weights stored in bfloat16 and its input cast to it; the visual
  prompt, the temporal module and the logits stay float32, so the calibrated threshold reads float32 logits. The
  fast path where the hardware computes bf16 natively (a GPU, AVX512-BF16, AMX). `compile=True` adds
  `torch.compile` of the tower (a one-time compilation of seconds to a minute; faster on CPUs where it fuses the work
  around the matrix products).
- an ONNX export folder (`hesp-export --onnx`, float32) or int8 export (`hesp-export --int8`): run with ONNX Runtime
  (`ONNXVideoClassifier`); its precision is the graph's.
"""

import logging
from typing import Any, Literal

import torch

from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification
from ..modeling.provenance_hesp import tell_if_drawn_faces
from ..modeling.video_processing_hesp import HESPVideoProcessor
from ..pairing import check_checkpoint_source, load_pair
from .onnx_runtime import ONNXVideoClassifier, is_onnx_export


logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
VideoClassifier = HESPForOpenSetVideoClassification | ONNXVideoClassifier


def load_for_prediction(
    checkpoint: str,
    *,
    precision: Precision = "fp32",
    inference_only: bool = False,
    compile: bool = False,
    threads: int | None = None,
    spinning: bool = True,
) -> tuple[VideoClassifier, HESPVideoProcessor]:
    """The model (in eval mode) and processor of `checkpoint`: a trained HESP folder or Hub id, or an ONNX / int8
    export folder. `precision`, `inference_only` and `compile` apply to PyTorch checkpoints; `threads` (intra-op
    threads) and `spinning` (idle threads busy-wait; turn off where decoding shares the cores) to exports."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    check_checkpoint_source(checkpoint)
    if is_onnx_export(checkpoint):
        if precision != "fp32" or compile or inference_only:
            raise ValueError(
                f"{checkpoint} is an ONNX export: its precision is its graph's (float32, or int8 from hesp-export "
                f"--int8) and it is already inference-only, so precision={precision!r}, compile={compile} and "
                f"inference_only={inference_only} do not apply; pass the PyTorch checkpoint for those."
            )
        model = ONNXVideoClassifier(checkpoint, threads=threads, spinning=spinning)
        tell_if_drawn_faces(model.config, checkpoint)  # a PyTorch checkpoint says it as it loads
        return model, HESPVideoProcessor.from_pretrained(checkpoint)
    model, processor = load_pair(checkpoint)
    if inference_only:
        model = model.to_inference_only()
    if precision == "bf16":
        bf16_tower(model)
    if compile:
        compile_tower(model)
    return model, processor


def bf16_tower(model: HESPForOpenSetVideoClassification) -> HESPForOpenSetVideoClassification:
    """Store the image tower (`vision_model`) in bfloat16, in place: its input is cast to bfloat16 and its outputs
    back to float32 (hooks), so the rest of the model computes in float32 as before. Returns `model`."""
    tower = model.vision_model
    if getattr(tower, "_hesp_bf16", False):
        return model
    tower.to(torch.bfloat16)
    tower.register_forward_pre_hook(_inputs_to_bf16, with_kwargs=True)
    tower.register_forward_hook(_outputs_to_fp32)
    tower._hesp_bf16 = True
    return model


def _inputs_to_bf16(_: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    def cast(value: Any) -> Any:
        return value.to(torch.bfloat16) if torch.is_tensor(value) and value.is_floating_point() else value

    return tuple(cast(value) for value in args), {key: cast(value) for key, value in kwargs.items()}


def _outputs_to_fp32(_: torch.nn.Module, __: Any, output: Any) -> Any:
    for key, value in output.items():
        if torch.is_tensor(value) and value.is_floating_point():
            output[key] = value.float()
        elif isinstance(value, tuple):  # hidden states, attentions
            output[key] = tuple(t.float() if torch.is_tensor(t) else t for t in value)
    return output


def compile_tower(model: HESPForOpenSetVideoClassification) -> HESPForOpenSetVideoClassification:
    """`torch.compile` the image tower in place (the first call of each input shape compiles). Returns `model`."""
    model.vision_model.compile()
    return model


def precision_of(model: VideoClassifier) -> str:
    """How `model`'s tower computes: "fp32", "bf16" or "int8" (for logs and benchmark rows)."""
    if isinstance(model, ONNXVideoClassifier):
        return model.precision
    return "bf16" if getattr(model.vision_model, "_hesp_bf16", False) else "fp32"
