"""The int8 export (ONNX Runtime dynamic quantization of the vision tower) and the loader every deployment form goes
through: round trip, refusals, and agreement with float32 on a model whose head was fitted to its clips."""

import numpy as np
import pytest
import torch

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor


pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from hesp_hf.inference.deployment import bf16_tower, load_for_prediction, precision_of  # noqa: E402
from hesp_hf.inference.onnx_runtime import ONNXVideoClassifier  # noqa: E402
from hesp_hf.inference.prediction import predict_clips  # noqa: E402
from hesp_hf.inference.quantization import INT8_TOLERANCE, export_int8  # noqa: E402
from hesp_hf.metrics.oscr.oscr import open_set_metrics  # noqa: E402


KNOWN, UNKNOWN, PER_CLASS = 3, 3, 20  # 120 clips: one flipped decision is 0.8 %


def class_clips(processor, seed=0):
    """Rendered clips of the embedded default's first 6 expressions (the demo's data kind); the first 3 known."""
    from hesp_hf.embedded.synthetic import CLASSES, render_clip

    videos = [
        render_clip(CLASSES[label], seed * 1000 + 100 * label + number, num_frames=4, size=64)[0]
        for label in range(KNOWN + UNKNOWN)
        for number in range(PER_CLASS)
    ]
    labels = torch.arange(KNOWN + UNKNOWN).repeat_interleave(PER_CLASS)
    pixels = processor(videos, return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
    return pixels, torch.where(labels < KNOWN, labels, -1)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A saved checkpoint on the embedded tiny CLIP (pretrained on these faces) whose prototype head was fitted to
    its known clips and whose threshold accepts 95 % of them, as training leaves it."""
    from hesp_hf.embedded.defaults import embedded_clip_path
    from hesp_hf.embedded.synthetic import CLASSES
    from hesp_hf.pairing import model_and_processor_from_clip

    torch.manual_seed(0)
    model, processor = model_and_processor_from_clip(embedded_clip_path(), list(CLASSES[:KNOWN]), num_frames=4)
    model.eval()
    clips, references = class_clips(processor)
    known = references >= 0
    with torch.no_grad():
        embeds = model(clips[known]).video_embeds
    model.set_class_prototypes(embeds, references[known])
    model.config.inference_logits = "prototypes"
    with torch.no_grad():
        scores = model(clips[known]).open_set_score
    model.config.unknown_threshold = float(torch.quantile(scores, 0.05))
    folder = tmp_path_factory.mktemp("fitted") / "full"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, folder, clips, references


@pytest.fixture(scope="module")
def int8_folder(fitted, tmp_path_factory):
    return export_int8(str(fitted[1]), tmp_path_factory.mktemp("exports") / "int8")


def test_int8_export_round_trips_through_the_loader_and_the_predictor(fitted, int8_folder, tmp_path):
    from hesp_hf.embedded.video_writer import write_video

    from .conftest import random_video

    model, _, _, _ = fitted
    exported = int8_folder
    assert (exported / "model.onnx").is_file() and (exported / "config.json").is_file()
    assert not (exported / "model.onnx.data").exists()  # int8 weights fit in the graph file
    assert not list(exported.parent.glob(".int8.*"))  # the staging folder is gone
    loaded, processor = load_for_prediction(str(exported))
    assert isinstance(loaded, ONNXVideoClassifier) and precision_of(loaded) == "int8"
    assert loaded.config.id2label == model.config.id2label
    assert processor.num_frames == model.config.num_frames
    clips = [str(write_video(tmp_path / f"c{i}.mp4", random_video(6, 40, 48, seed=i))) for i in range(3)]
    rows, summary = predict_clips(loaded, processor, clips, tmp_path / "rows.jsonl", batch_size=2, num_workers=0,
                                  progress=False)  # fmt: skip
    assert summary.failures == 0 and [row["file"] for row in rows] == clips
    assert all(row["threshold"] == pytest.approx(model.config.unknown_threshold) for row in rows)
    with pytest.raises(ValueError, match="ONNX export.*precision='bf16'"):
        load_for_prediction(str(exported), precision="bf16")


def test_int8_agrees_with_float32_within_the_stated_tolerance(fitted, int8_folder):
    model, _, clips, references = fitted
    int8 = ONNXVideoClassifier(int8_folder)
    with torch.no_grad():
        expected = model(clips).logits
    got = int8(pixel_values_videos=clips).logits
    known = model.config.num_known_labels
    scale = float(expected[:, :known].abs().max())
    assert float((got[:, :known] - expected[:, :known]).abs().max()) <= INT8_TOLERANCE * scale
    assert float((got.argmax(-1) == expected.argmax(-1)).float().mean()) >= 0.99  # the decision target
    fp32_metrics = open_set_metrics(expected.numpy(), references.numpy(), has_unknown_column=True)
    int8_metrics = open_set_metrics(got.numpy(), references.numpy(), has_unknown_column=True)
    assert 0.5 < fp32_metrics["auroc"]  # the head separates something, so the comparison means something
    assert abs(int8_metrics["auroc"] - fp32_metrics["auroc"]) <= 0.01


def test_a_checkpoint_int8_cannot_represent_is_refused_and_nothing_is_written(fitted, tmp_path):
    _, folder, _, _ = fitted
    model = HESPForOpenSetVideoClassification.from_pretrained(folder).eval()
    with torch.no_grad():  # one activation channel 1000x the rest: per-tensor int8 activations lose all the others
        for layer in model.vision_model.encoder.layers:
            layer.layer_norm1.weight[0] = 1e4
            layer.layer_norm2.weight[0] = 1e4
    model.save_pretrained(tmp_path / "outliers")
    HESPVideoProcessor.from_pretrained(folder).save_pretrained(tmp_path / "outliers")
    with pytest.raises(ValueError, match=r"cannot be quantized to int8: .* differ from float32 by"):
        export_int8(str(tmp_path / "outliers"), tmp_path / "int8")
    assert not (tmp_path / "int8").exists() and not list(tmp_path.glob(".int8.*"))


def test_an_onnx_export_is_refused_as_a_source(int8_folder, tmp_path):
    with pytest.raises(ValueError, match="holds an ONNX export.*not a PyTorch checkpoint"):
        export_int8(str(int8_folder), tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_bf16_tower_keeps_the_head_in_float32_and_the_decisions(fitted):
    model, folder, clips, _ = fitted
    loaded, _ = load_for_prediction(str(folder), precision="bf16")
    assert (
        precision_of(loaded) == "bf16"
        and loaded.vision_model.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    )
    assert loaded.visual_projection.weight.dtype == torch.float32
    assert bf16_tower(loaded) is loaded  # a second call changes nothing
    with torch.no_grad():
        expected, got = model(clips), loaded(clips)
    assert got.logits.dtype == torch.float32 and got.open_set_score.dtype == torch.float32
    agreement = (got.logits.argmax(-1) == expected.logits.argmax(-1)).float().mean()
    assert float(agreement) >= 0.99
    scale = float(expected.open_set_score.abs().max())
    np.testing.assert_allclose(got.open_set_score.numpy(), expected.open_set_score.numpy(), rtol=0, atol=0.01 * scale)
