"""The int8 export: the ONNX export (`export_onnx`) with the vision tower's matrix products quantized to int8 by ONNX
Runtime's dynamic quantization, for CPUs with int8 dot-product units (AVX512-VNNI, AVX-VNNI, AMX-INT8).

    export_int8("runs/dfew-1", "runs/dfew-1-int8")  # or: hesp-export --checkpoint runs/dfew-1 --output_dir ... --int8

Why this form (docs/performance.md has the measurements): ONNX Runtime's dynamic quantization with signed,
per-output-channel int8 weights ran faster than torch's dynamic int8 Linears on the CPUs measured, keeps the smallest
resident memory, and stores the weights in a quarter of the space. Activations are quantized per call (no calibration
data needed). Only the tower's Linears are quantized: the attention products stay float32, and the head (temporal
pooling, the cosine logits against the class and reciprocal-point features, which the calibrated threshold reads)
stays float32, because a logit error there moves decisions directly.

The folder is an ONNX export like `export_onnx`'s (`model.onnx`, `config.json`, the processor, the run's card and
metrics), so `ONNXVideoClassifier` and `hesp-predict` take it unchanged; the graph's metadata says `int8`. Before it
is kept, its logits on random clips are compared with the float32 export's (`INT8_TOLERANCE`); a checkpoint whose
activations int8 cannot represent (large outliers) is refused, and nothing is written.
"""

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..atomic_files import atomic_folder, check_new_folder
from .export import export_onnx
from .onnx_runtime import ONNX_FILE, PRECISION_KEY, ONNXVideoClassifier, is_onnx_export, require_onnx


logger = logging.getLogger(__name__)

# Largest difference from the float32 export allowed in any logit on the check clips, as a share of the largest
# float32 logit's magnitude (a logit is a cosine times CLIP's scale, so this bounds the cosine error). Trained demo
# and ViT-B/32 checkpoints quantize to well within it (docs/performance.md); broken quantization lands far outside.
INT8_TOLERANCE = 0.05
# Where the quantized Linears live in the exported graph (the exporter records each node's module path).
TOWER_SCOPES = ("model.vision_model", "model.visual_projection")
_SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def export_int8(
    checkpoint: str, output_dir: str | Path, opset: int | None = None, tolerance: float = INT8_TOLERANCE
) -> Path:
    """Export `checkpoint` (a trained PyTorch HESP folder or Hub id) as an int8 ONNX graph in `output_dir`, with the
    checkpoint's `config.json`, processor, model card and metrics. Written whole or not at all; needs the `onnx`
    extra. Raises `ValueError` for a source it cannot quantize: an ONNX export (quantize from the PyTorch checkpoint
    it came from), a graph without tower Linears, or one whose int8 logits differ from float32 by more than
    `tolerance` (see `INT8_TOLERANCE`)."""
    require_onnx()
    output_dir = Path(output_dir)
    check_new_folder(output_dir)
    if is_onnx_export(checkpoint):
        raise ValueError(
            f"{checkpoint} holds an ONNX export ({ONNX_FILE}), not a PyTorch checkpoint: export int8 from the trained "
            "checkpoint it was made from (its folder with model.safetensors)."
        )
    with tempfile.TemporaryDirectory(dir=output_dir.parent if output_dir.parent.exists() else None) as scratch:
        fp32_folder = export_onnx(checkpoint, Path(scratch) / "fp32", opset=opset)
        with atomic_folder(output_dir) as staging:
            quantized = quantize_tower(fp32_folder / ONNX_FILE, staging / ONNX_FILE, Path(scratch))
            for path in fp32_folder.iterdir():  # config, processor, card, metrics: everything but the graph
                if not path.name.startswith(ONNX_FILE):
                    shutil.copy2(path, staging / path.name)
            difference, scale = _compare(fp32_folder, staging)
            if not difference <= tolerance * scale:
                raise ValueError(
                    f"{checkpoint} cannot be quantized to int8: its int8 logits differ from float32 by {difference:.3g} "
                    f"on random clips, more than {tolerance:g} x the largest logit ({scale:.3g}); its activations "
                    "probably hold outliers that int8 cannot represent. Nothing was written: use the float32 ONNX "
                    "export (--onnx) or bf16 (hesp-predict --precision bf16) instead."
                )
    logger.info(
        "int8 export of %s in %s: %d Linears quantized; max logit difference from float32 %.2g (%.2g %% of the "
        "largest logit).",
        checkpoint, output_dir, quantized, difference, 100 * difference / scale,
    )  # fmt: skip
    return output_dir


def quantize_tower(source: Path, target: Path, scratch: Path) -> int:
    """Write `source` (a float32 export) to `target` with the tower's Linears dynamically quantized (signed int8
    weights, one scale per output channel); returns how many. ONNX Runtime's pre-processing runs first (constant
    folding and shape inference, which let the quantizer see every weight); its symbolic shape inference is skipped,
    since it cannot follow the exporter's dynamic-batch `Expand`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = _tower_linears(onnx.load(str(source), load_external_data=False))
    prepared = scratch / "prepared.onnx"
    quant_pre_process(
        str(source), str(prepared), skip_symbolic_shape=True, save_as_external_data=True,
        all_tensors_to_one_file=True, external_data_location=prepared.name + ".data",
    )  # fmt: skip
    graph = onnx.load(str(prepared))
    weights = {tensor.name for tensor in graph.graph.initializer if len(tensor.dims) == 2}
    # Node names survive the pre-processing (its metadata does not): keep those whose weight is a 2-D constant.
    chosen = [node.name for node in graph.graph.node if node.name in names and node.input[1] in weights]
    if not chosen:
        raise ValueError(
            f"{source} has no vision-tower Linear with a constant weight to quantize (looked for MatMul nodes under "
            f"{', '.join(TOWER_SCOPES)}); is it a HESP export?"
        )
    with _quiet_root_logger():
        quantize_dynamic(
            str(prepared), str(target), per_channel=True, weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"], nodes_to_quantize=chosen,
        )  # fmt: skip
    model = onnx.load(str(target))
    onnx.helper.set_model_props(model, {PRECISION_KEY: "int8"})
    onnx.save(model, str(target))
    return len(chosen)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantizer logs a line per tensor to the root logger at INFO; they are dropped while it runs."""
    before = logging.root.manager.disable
    logging.disable(max(before, logging.INFO))
    try:
        yield
    finally:
        logging.disable(before)


def _tower_linears(graph) -> set[str]:
    """Names of the MatMul nodes the exporter placed in the vision tower or its projection."""
    names = set()
    for node in graph.graph.node:
        if node.op_type != "MatMul":
            continue
        scopes = next((prop.value for prop in node.metadata_props if prop.key == _SCOPE_KEY), "")
        if any(f"'{scope}" in scopes for scope in TOWER_SCOPES):
            names.add(node.name)
    return names


def _compare(fp32_folder: Path, int8_folder: Path) -> tuple[float, float]:
    """Max abs logit difference between the two exports on random clips, and the largest float32 logit magnitude."""
    reference = ONNXVideoClassifier(fp32_folder)
    config = reference.config
    vision = config.vision_config
    clips = torch.randn(
        4, config.num_frames, vision.num_channels, vision.image_size, vision.image_size,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    expected = reference(pixel_values_videos=clips).logits[:, : config.num_known_labels]
    got = ONNXVideoClassifier(int8_folder)(pixel_values_videos=clips).logits[:, : config.num_known_labels]
    return float((got - expected).abs().max()), float(expected.abs().max())
