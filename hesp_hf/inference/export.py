"""Lean exports of a trained HESP checkpoint for inference.

- `export_inference_only`: the same checkpoint format without the text side (see
  `HESPForOpenSetVideoClassification.to_inference_only`): loads with the Auto classes, the pipeline and
  `trust_remote_code=True`, gives identical logits, about 40 % fewer parameters at ViT-B size.
- `export_onnx`: that inference graph as ONNX (dynamic batch) for ONNX Runtime (`hesp_hf.onnx_runtime`), checked
  against eager float32 before it is kept.
"""

import io
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import torch

from ..atomic_files import atomic_folder, check_new_folder
from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification
from ..pairing import load_pair
from .onnx_runtime import ONNX_FILE, ONNXVideoClassifier, require_onnx


logger = logging.getLogger(__name__)


def export_inference_only(checkpoint: str, output_dir: str | Path) -> Path:
    """Write the inference-only form of `checkpoint` (folder or Hub id) and its processor to `output_dir`, whole or
    not at all (built in a temporary folder beside it, then renamed). `output_dir` must not exist or be empty."""
    output_dir = Path(output_dir)
    check_new_folder(output_dir)
    model, processor = load_pair(checkpoint)
    lean = model.to_inference_only()
    with atomic_folder(output_dir) as staging:
        lean.save_pretrained(staging)
        processor.save_pretrained(staging)
        _copy_run_records(checkpoint, staging)
    full, kept = _count(model), _count(lean)
    logger.info(
        "Inference-only export of %s in %s: %d parameters and constants instead of %d (%.1f %% fewer).",
        checkpoint, output_dir, kept, full, 100 * (1 - kept / full),
    )  # fmt: skip
    return output_dir


RUN_RECORDS = ("README.md", "metrics.json")  # the model card and the test metrics it quotes


def _copy_run_records(checkpoint: str, folder: Path) -> None:
    """The model card and metrics of a local training folder travel with its exports (a Hub id has its own)."""
    for name in RUN_RECORDS:
        if (Path(checkpoint) / name).is_file():
            shutil.copy2(Path(checkpoint) / name, folder / name)


def _count(model) -> int:
    return sum(t.numel() for t in model.parameters()) + sum(
        t.numel() for t in model.buffers() if t.is_floating_point()
    )


class _LogitsAndScore(torch.nn.Module):
    """The exported graph: `pixel_values_videos (B, T, C, H, W)` -> `logits (B, K + 1)`, `open_set_score (B,)`."""

    def __init__(self, model: HESPForOpenSetVideoClassification):
        super().__init__()
        self.model = model

    def forward(self, pixel_values_videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model(pixel_values_videos=pixel_values_videos)
        return output.logits, output.open_set_score


ONNX_TOLERANCE = 1e-4  # max abs logit difference from eager float32 that an export must meet


def export_onnx(checkpoint: str, output_dir: str | Path, opset: int | None = None, max_batch: int = 1024) -> Path:
    """Export `checkpoint`'s inference graph, `pixel_values_videos -> logits, open_set_score` (dynamic batch, the
    checkpoint's `num_frames`), to `output_dir/model.onnx` (weights in `model.onnx.data` beside it), with the
    checkpoint's `config.json` (labels, threshold) and processor, for [`ONNXVideoClassifier`] or any ONNX runtime.

    The graph is the inference-only form (no text tower). The export is checked before it is kept: ONNX Runtime's
    logits on random clips must match eager float32 within `ONNX_TOLERANCE`. Written whole or not at all; needs the
    `onnx` extra (`pip install hesp-hf[onnx]`)."""
    require_onnx()
    output_dir = Path(output_dir)
    check_new_folder(output_dir)
    model, processor = load_pair(checkpoint)
    lean = model.to_inference_only()
    graph = _LogitsAndScore(lean).eval()
    vision = lean.config.vision_config
    example = torch.randn(
        2, lean.config.num_frames, vision.num_channels, vision.image_size, vision.image_size,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with atomic_folder(output_dir) as staging:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(
                graph,
                (example,),
                str(staging / ONNX_FILE),
                dynamo=True,
                dynamic_shapes={"pixel_values_videos": {0: batch}},
                input_names=["pixel_values_videos"],
                output_names=["logits", "open_set_score"],
                opset_version=opset,
                external_data=True,
            )
        if opset is not None:
            _check_opset(staging / ONNX_FILE, opset)
        lean.config.save_pretrained(staging)
        processor.save_pretrained(staging)
        _copy_run_records(checkpoint, staging)
        check = torch.cat([example, example[:1] * 0.5])  # another batch size than the example's
        with torch.no_grad():
            expected = graph(check)
        got = ONNXVideoClassifier(staging)(pixel_values_videos=check)
        difference = float((got.logits - expected[0]).abs().max())
        if not difference <= ONNX_TOLERANCE:
            raise RuntimeError(
                f"The ONNX export of {checkpoint} differs from eager float32 by {difference:.2e} in the logits "
                f"(tolerance {ONNX_TOLERANCE}); nothing was written."
            )
    logger.info("ONNX export of %s in %s (max logit difference from eager %.1e).", checkpoint, output_dir, difference)
    return output_dir


def _check_opset(path: Path, opset: int) -> None:
    """The exporter falls back to its own opset, with only a warning, when it cannot convert the graph to the one
    asked for: a graph of another opset than `--opset` is refused (inside the staging folder: nothing is written)."""
    import onnx

    written = onnx.load(str(path), load_external_data=False).opset_import
    found = next((entry.version for entry in written if entry.domain in ("", "ai.onnx")), None)
    if found != opset:
        raise ValueError(
            f"--opset {opset}: the exporter could not convert the graph to opset {opset} and wrote opset {found}; "
            f"nothing was written: leave --opset out, or choose {f'{found} or above' if opset < found else 'a lower one'}."
        )


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter prints its progress to stdout; it goes to the debug log instead."""
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        yield
    logger.debug("%s", buffer.getvalue())
