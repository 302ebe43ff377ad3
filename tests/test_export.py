"""The inference-only form: the text side baked in, the text tower dropped, the logits unchanged."""

import pytest
import torch
from transformers import AutoModelForVideoClassification, pipeline

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
from hesp_hf.inference.export import export_inference_only


def trained_looking(model: HESPForOpenSetVideoClassification) -> HESPForOpenSetVideoClassification:
    """Non-zero prompts and points, as after training (fresh ones are zeros or symmetric)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in (model.prompt_learner.ctx, model.visual_prompt.delta, model.reciprocal_points.images):
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        if model.config.temporal_pooling == "attention":
            model.temporal_pooling.query.copy_(torch.randn(model.temporal_pooling.query.shape, generator=generator))
            model.temporal_pooling.text_guidance.fill_(2.0)
    return model.eval()


def video_batch(model, batch=3, seed=0):
    size = model.config.vision_config.image_size
    return torch.randn(batch, model.config.num_frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "overrides",
    [
        {"unknown_threshold": 0.5},
        {"temporal_pooling": "attention", "visual_prompt_location": "per_frame", "reciprocal_distance": "arpl"},
        {"use_reciprocal_points": False, "open_set_score": "max_softmax", "unknown_threshold": 0.6},
    ],
)
def test_inference_only_gives_identical_outputs_with_fewer_tensors(make_model, overrides):
    model = trained_looking(make_model(**overrides))
    lean = model.to_inference_only()
    assert lean.config.inference_only and not model.config.inference_only  # the original is left as it was
    assert not hasattr(lean, "text_model") and not hasattr(lean, "prompt_learner")
    assert not hasattr(lean, "reciprocal_points")
    videos = video_batch(model)
    with torch.no_grad():
        full, baked = model(videos), lean(videos)
    for name in ("logits", "open_set_score", "clip_logits", "text_embeds"):
        torch.testing.assert_close(getattr(baked, name), getattr(full, name), rtol=0, atol=0)
    if model.config.use_reciprocal_points:
        torch.testing.assert_close(baked.reciprocal_logits, full.reciprocal_logits, rtol=0, atol=0)
    assert sum(p.numel() for p in lean.parameters()) < sum(p.numel() for p in model.parameters())
    assert not any(p.requires_grad for p in lean.parameters())


def test_inference_only_refuses_training_and_text(make_model):
    lean = trained_looking(make_model()).to_inference_only()
    with pytest.raises(ValueError, match="inference-only.*cannot compute the training loss"):
        lean(video_batch(lean, batch=2), labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no text tower"):
        lean.get_text_features(torch.tensor([[1, 2, 3]]))
    assert lean.to_inference_only() is lean


def test_export_round_trip_through_auto_classes_and_pipeline(make_model, tiny_clip_dir, sample_clip, tmp_path):
    model = trained_looking(make_model(unknown_threshold=0.0))
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    model.save_pretrained(tmp_path / "full")
    processor.save_pretrained(tmp_path / "full")
    (tmp_path / "full" / "README.md").write_text("model card\n")
    exported = export_inference_only(str(tmp_path / "full"), tmp_path / "lean")
    assert (exported / "README.md").read_text() == "model card\n"  # the card travels with the export
    assert not list(tmp_path.glob(".lean.*"))  # the staging folder is gone
    assert (exported / "model.safetensors").stat().st_size < (tmp_path / "full" / "model.safetensors").stat().st_size

    loaded = AutoModelForVideoClassification.from_pretrained(exported).eval()
    assert loaded.config.inference_only
    inputs = HESPVideoProcessor.from_pretrained(exported)(str(sample_clip), return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
    full_answer = pipeline("video-classification", model=str(tmp_path / "full"))(str(sample_clip))
    lean_answer = pipeline("video-classification", model=str(exported))(str(sample_clip))
    assert lean_answer == full_answer

    with pytest.raises(ValueError, match="not an empty folder"):
        export_inference_only(str(tmp_path / "full"), exported)
