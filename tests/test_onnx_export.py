"""ONNX export of the inference graph, run with ONNX Runtime: the eager model's logits and decisions."""

import pytest
import torch

from hesp_hf import HESPVideoProcessor


pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from hesp_hf.inference.export import export_onnx  # noqa: E402
from hesp_hf.inference.onnx_runtime import ONNXVideoClassifier  # noqa: E402
from hesp_hf.inference.prediction import predict_clips  # noqa: E402

from .test_export import trained_looking  # noqa: E402


@pytest.fixture
def exported(make_model, tiny_clip_dir, tmp_path):
    model = trained_looking(make_model(unknown_threshold=0.0, temporal_pooling="attention"))
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    model.save_pretrained(tmp_path / "full")
    processor.save_pretrained(tmp_path / "full")
    return model, processor, export_onnx(str(tmp_path / "full"), tmp_path / "onnx")


def test_onnx_runtime_matches_eager_at_any_batch_size(exported):
    model, _, folder = exported
    assert (folder / "model.onnx").exists() and (folder / "config.json").exists()
    classifier = ONNXVideoClassifier(folder)
    assert classifier.config.id2label == model.config.id2label
    for batch in (1, 5):
        pixels = torch.randn(batch, 4, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(pixels)
        got = classifier(pixel_values_videos=pixels)
        torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-4)
        torch.testing.assert_close(got.open_set_score, expected.open_set_score, rtol=0, atol=1e-4)
        assert torch.equal(got.logits.argmax(-1), expected.logits.argmax(-1))


def test_predictor_takes_the_onnx_export(exported, tmp_path):
    from hesp_hf.embedded.video_writer import write_video

    from .conftest import random_video

    model, processor, folder = exported
    clips = [str(write_video(tmp_path / f"c{i}.mp4", random_video(6, 40, 48, seed=i))) for i in range(3)]
    eager, _ = predict_clips(model, processor, clips, batch_size=2, num_workers=0, progress=False)
    onnx, _ = predict_clips(ONNXVideoClassifier(folder), processor, clips, batch_size=2, num_workers=0, progress=False)
    assert [row["label"] for row in onnx] == [row["label"] for row in eager]
    for a, b in zip(onnx, eager, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_export_refuses_a_folder_in_use(exported):
    _, _, folder = exported
    with pytest.raises(ValueError, match="not an empty folder"):
        export_onnx(str(folder), folder)


def test_the_onnx_export_carries_the_prototype_head(make_model, tiny_clip_dir, tmp_path):
    model = trained_looking(make_model(unknown_threshold=0.0))
    model.set_class_prototypes(torch.randn(3, model.config.projection_dim), torch.arange(3))
    model.config.inference_logits = "prototypes"
    model.save_pretrained(tmp_path / "full")
    HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4).save_pretrained(tmp_path / "full")
    classifier = ONNXVideoClassifier(export_onnx(str(tmp_path / "full"), tmp_path / "onnx"))
    pixels = torch.randn(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(pixels)
        plain = model.prototype_logits(expected.video_embeds)
    torch.testing.assert_close(expected.logits[:, :3], plain)  # the eager model predicts with its prototypes
    torch.testing.assert_close(classifier(pixel_values_videos=pixels).logits, expected.logits, rtol=0, atol=1e-4)


def test_the_timeline_runs_an_onnx_export_window_by_window(exported, tmp_path):
    """An export cannot share frame features between windows: each window runs whole, with the same decisions."""
    from hesp_hf.inference.timeline import timeline

    from .test_timeline import noise_video

    model, processor, folder = exported
    video = noise_video(tmp_path / "long.mp4", seconds=2.5)
    eager = timeline(model.eval(), processor, video, window=1.0, stride=0.5)
    onnx = timeline(ONNXVideoClassifier(folder), processor, video, window=1.0, stride=0.5)
    assert len(onnx.windows) == len(eager.windows) == 4
    for ours, reference in zip(onnx.windows, eager.windows, strict=True):
        assert (ours.start, ours.label) == (reference.start, reference.label)
        assert ours.score == pytest.approx(reference.score, abs=1e-3)


def test_an_opset_the_export_cannot_give_is_refused_and_nothing_written(exported, tmp_path):
    """The exporter writes opset 18 and converts to the opset asked for; where it cannot (lower than 18, newer than it
    knows) it kept opset 18 with only a warning, and the export was reported as done."""
    import onnx

    source = str(tmp_path / "full")
    with pytest.raises(
        ValueError, match=r"^--opset 17: the exporter could not convert the graph to opset 17 and wrote opset 18"
    ):
        export_onnx(source, tmp_path / "o17", opset=17)
    with pytest.raises(ValueError, match=r"^--opset 99: .* wrote opset 18; .* choose a lower one\.$"):
        export_onnx(source, tmp_path / "o99", opset=99)
    assert not (tmp_path / "o17").exists() and not (tmp_path / "o99").exists()
    written = onnx.load(str(export_onnx(source, tmp_path / "o21", opset=21) / "model.onnx"), load_external_data=False)
    assert [entry.version for entry in written.opset_import if entry.domain in ("", "ai.onnx")] == [21]
