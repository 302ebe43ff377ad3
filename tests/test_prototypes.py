"""The prototype head: class prototypes of the trained video embedding, saved in the checkpoint, used by the pipeline;
checkpoints from before it load with their own head."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, pipeline

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor

from .conftest import LABELS


def test_prototypes_are_the_normalised_class_means_of_normalised_embeddings(make_model):
    model = make_model().eval()
    dim = model.config.projection_dim
    rng = np.random.default_rng(0)
    embeds = rng.normal(size=(7, dim))
    labels = np.array([0, 0, 1, 2, 2, 2, 1])
    model.set_class_prototypes(torch.tensor(embeds, dtype=torch.float32), torch.tensor(labels))
    # Reference written out: unit rows, per-class mean, unit again.
    unit = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    for k in range(3):
        mean = unit[labels == k].mean(axis=0)
        np.testing.assert_allclose(model.class_prototypes[k].numpy(), mean / np.linalg.norm(mean), atol=1e-6)


def test_the_prototype_head_predicts_the_nearest_prototype_by_cosine(make_model):
    model = make_model().eval()
    pixels = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        embeds = model(pixel_values_videos=pixels).video_embeds
    prototypes = torch.randn(3, model.config.projection_dim)
    prototypes[1] = embeds[0] * 3.0  # clip 0 lies exactly on class 1's prototype (scale does not matter)
    model.set_class_prototypes(prototypes, torch.arange(3))
    model.config.inference_logits = "prototypes"
    with torch.no_grad():
        output = model(pixel_values_videos=pixels)
    cosine = torch.nn.functional.cosine_similarity(embeds[:, None, :], prototypes[None, :, :], dim=-1)
    torch.testing.assert_close(output.logits[:, :3], model.logit_scale.exp() * cosine, atol=1e-4, rtol=1e-5)
    assert int(output.logits[0].argmax()) == 1
    assert float(output.open_set_score[0]) == pytest.approx(float(model.logit_scale.exp()), rel=1e-5)


def test_bad_prototype_input_is_refused(make_model):
    model = make_model()
    dim = model.config.projection_dim
    with pytest.raises(ValueError, match="No clip of the known class"):
        model.set_class_prototypes(torch.randn(2, dim), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"known-class indices 0..2"):
        model.set_class_prototypes(torch.randn(3, dim), torch.tensor([0, 1, -1]))
    with pytest.raises(ValueError, match=f"video_embeds must be \\(N, {dim}\\)"):
        model.set_class_prototypes(torch.randn(3, dim + 1), torch.tensor([0, 1, 2]))


@pytest.fixture
def saved_pair(make_model, tiny_clip_dir, tmp_path):
    def save(model, name):
        folder = tmp_path / name
        model.save_pretrained(folder)
        HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4).save_pretrained(folder)
        return folder

    return save


def test_prototypes_round_trip_and_drive_the_pipeline(make_model, saved_pair, sample_clip):
    model = make_model().eval()
    processor = HESPVideoProcessor.from_pretrained(saved_pair(model, "plain"))
    inputs = processor(str(sample_clip), return_tensors="pt")
    with torch.no_grad():
        embed = model(**inputs).video_embeds[0]
    # Prototypes that put the clip on "neutral" (index 2), whatever the prompt logits said.
    prototypes = torch.stack([-embed, torch.roll(embed, 1), embed])
    model.set_class_prototypes(prototypes, torch.arange(3))
    model.config.inference_logits = "prototypes"
    folder = saved_pair(model, "prototypes")

    stored = load_file(folder / "model.safetensors")
    torch.testing.assert_close(stored["class_prototypes"], model.class_prototypes)
    loaded = AutoModel.from_pretrained(folder).eval()
    assert loaded.config.inference_logits == "prototypes"
    torch.testing.assert_close(loaded.class_prototypes, model.class_prototypes)
    results = pipeline("video-classification", model=str(folder), top_k=4)(str(sample_clip))
    assert results[0]["label"] == LABELS[2]


def test_a_checkpoint_from_before_the_prototype_head_loads_with_its_old_score(make_model, saved_pair):
    model = make_model().eval()
    folder = saved_pair(model, "old")
    weights = load_file(folder / "model.safetensors")
    del weights["class_prototypes"]  # as written before the head existed
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config.pop("inference_logits", None)  # old configs: the default, the ensemble
    (folder / "config.json").write_text(json.dumps(config))

    loaded = HESPForOpenSetVideoClassification.from_pretrained(folder).eval()
    assert loaded.config.inference_logits == "ensemble" and not loaded.class_prototypes.any()
    pixels = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values_videos=pixels).logits, model(pixel_values_videos=pixels).logits)


def test_a_prototype_config_without_prototypes_is_refused(make_model, saved_pair):
    model = make_model()
    model.config.inference_logits = "prototypes"  # never fitted
    folder = saved_pair(model, "unfitted")
    with pytest.raises(ValueError, match="holds no class_prototypes"):
        HESPForOpenSetVideoClassification.from_pretrained(folder)


def test_the_lean_export_keeps_the_prototype_head(make_model):
    model = make_model().eval()
    model.set_class_prototypes(torch.randn(3, model.config.projection_dim), torch.arange(3))
    model.config.inference_logits = "prototypes"
    lean = model.to_inference_only()
    pixels = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(lean(pixel_values_videos=pixels).logits, model(pixel_values_videos=pixels).logits)
    torch.testing.assert_close(lean.class_prototypes, model.class_prototypes)


def test_leave_one_out_accuracy_by_hand():
    from hesp_hf.training.prototypes import choose_prototype_space, leave_one_out_accuracy

    # class 0: (1, 0) and (0, 1); class 1: (0, 1) and (0.1, 1). Left out of its own class, (1, 0) meets class 0's
    # prototype (0, 1) at cosine 0 and class 1's at about 0.05: wrong; (0, 1) meets (1, 0) at 0 and class 1 at about
    # 1: wrong. Class 1's clips keep their own class (cosine ~0.995 against ~0.71 and ~0.77): right. 2 of 4.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert leave_one_out_accuracy(features, labels) == 0.5
    separable = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]])
    assert leave_one_out_accuracy(separable, labels) == 1.0
    assert choose_prototype_space(features, separable, labels)[0] == "frozen"
    assert choose_prototype_space(separable, features, labels)[0] == "trained"
    assert choose_prototype_space(separable, separable, labels)[0] == "trained"  # a tie keeps the trained space
    assert choose_prototype_space(features, separable, labels, margin=0.5)[0] == "trained"  # 1.0 is not > 0.5 + 0.5


def test_the_frozen_prototype_space_reads_the_frozen_clip(make_model, tiny_clip_dir):
    from transformers import CLIPModel

    model = make_model().eval()
    model.set_class_prototypes(torch.randn(3, model.config.projection_dim), torch.arange(3))
    model.config.inference_logits, model.config.prototype_space = "prototypes", "frozen"
    pixels = torch.randn(2, 4, 3, 32, 32)
    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    with torch.no_grad():
        output = model(pixel_values_videos=pixels)
        frames = clip.get_image_features(pixel_values=pixels.flatten(0, 1)).pooler_output.view(2, 4, -1)
    frozen = torch.nn.functional.normalize(frames, dim=-1).mean(dim=1)
    cosine = torch.nn.functional.cosine_similarity(frozen[:, None], model.class_prototypes[None], dim=-1)
    torch.testing.assert_close(output.logits[:, :3], model.logit_scale.exp() * cosine, atol=1e-4, rtol=1e-5)
