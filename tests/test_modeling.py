"""HESP model: shapes, Auto-class round trips, batching, determinism, float64, gradients, CLIP equivalence."""

import math

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
    AutoTokenizer,
    CLIPModel,
)

from hesp_hf import HESPConfig, HESPForOpenSetVideoClassification

from .conftest import LABELS, random_video


B, T, K = 2, 4, len(LABELS)


def videos(batch=B, frames=T, seed=0, dtype=torch.float32):
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("location", ["dataset", "per_frame"])
def test_output_shapes(make_model, pooling, location):
    model = make_model(temporal_pooling=pooling, visual_prompt_location=location).eval()
    out = model(videos(), labels=torch.tensor([0, 2]))
    D = model.config.projection_dim
    assert out.logits.shape == (B, K + 1)
    assert out.open_set_score.shape == (B,)
    assert out.clip_logits.shape == out.reciprocal_logits.shape == (B, K)
    assert out.video_embeds.shape == (B, D)
    assert out.frame_weights.shape == (B, T)
    assert torch.allclose(out.frame_weights.sum(-1), torch.ones(B))
    assert out.text_embeds.shape == out.negative_visual_embeds.shape == (K, D)
    assert out.loss.shape == ()
    assert set(out.loss_terms) == {"known_ce", "known_contrastive", "negative_clip", "negative_ce", "hybrid_ce"}
    # logits: ensemble of the two branches, then the unknown column; the score is the best known logit.
    ensemble = (out.clip_logits + out.reciprocal_logits) / 2
    torch.testing.assert_close(out.logits[:, :K], ensemble)
    torch.testing.assert_close(out.open_set_score, ensemble.max(-1).values)


def test_labels_and_unknown_column(make_model):
    model = make_model().eval()
    config = model.config
    assert config.id2label == {0: "happy", 1: "sad", 2: "neutral", 3: "unknown"}
    assert config.known_labels == LABELS
    with torch.no_grad():
        out = model(videos())
        assert (out.logits.argmax(-1) < K).all()  # uncalibrated: unknown never wins
        score = out.open_set_score
        model.config.unknown_threshold = float(score.max()) + 1.0  # rejects every clip
        assert (model(videos()).logits.argmax(-1) == K).all()
        model.config.unknown_threshold = float(score.min()) - 1.0  # accepts every clip
        assert (model(videos()).logits.argmax(-1) < K).all()


def test_rejects_bad_labels(make_model):
    model = make_model()
    with pytest.raises(ValueError, match="known-class indices in 0..2"):
        model(videos(), labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="known-class indices"):
        model(videos(), labels=torch.tensor([-2, 0]))


def test_unknown_clips_are_left_out_of_the_loss(make_model):
    model = make_model().eval()
    batch = videos(batch=3)
    with torch.no_grad():
        mixed = model(batch, labels=torch.tensor([1, -1, 0]))
        known_only = model(batch[[0, 2]], labels=torch.tensor([1, 0]))
        only_unknown = model(batch[1:2], labels=torch.tensor([-1]))
    torch.testing.assert_close(mixed.loss, known_only.loss)
    torch.testing.assert_close(only_unknown.loss, only_unknown.loss_terms["negative_clip"])
    assert only_unknown.loss_terms["known_ce"] == 0


def test_auto_round_trip(make_model, tmp_path):
    model = make_model(temporal_pooling="attention").eval()
    with torch.no_grad():  # make the new parameters non-trivial so the round trip checks them
        model.prompt_learner.ctx.normal_()
        model.visual_prompt.delta.uniform_(-0.5, 0.5)
        model.temporal_pooling.query.normal_()
        model.reciprocal_points.radius.fill_(0.7)
    model.config.unknown_threshold = 1.5
    model.save_pretrained(tmp_path)
    expected = model(videos()).logits.detach()

    assert isinstance(AutoConfig.from_pretrained(tmp_path), HESPConfig)
    for auto in (AutoModel, AutoModelForVideoClassification, HESPForOpenSetVideoClassification):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, HESPForOpenSetVideoClassification)
        torch.testing.assert_close(loaded(videos()).logits, expected, rtol=0, atol=0)
        assert loaded.config.unknown_threshold == 1.5
    files = {p.name for p in tmp_path.iterdir()}
    assert {"configuration_hesp.py", "modeling_hesp.py", "loss_hesp.py", "model.safetensors"} <= files


def test_single_clip_equals_batch_and_eval_is_deterministic(make_model):
    model = make_model(temporal_pooling="attention", visual_prompt_location="per_frame").eval()
    batch = videos(batch=3)
    with torch.no_grad():
        together = model(batch)
        alone = model(batch[1:2])
        again = model(batch)
    for name in ("logits", "open_set_score", "video_embeds", "frame_weights"):
        torch.testing.assert_close(alone[name][0], together[name][1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(again[name], together[name], atol=0, rtol=0)


def test_runs_in_float64(make_model):
    model = make_model().double()
    out = model(videos(dtype=torch.float64), labels=torch.tensor([1, 1]))
    assert out.logits.dtype == out.loss.dtype == torch.float64
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_gradients_reach_trainable_parameters_only(make_model, pooling):
    model = make_model(temporal_pooling=pooling).train()
    out = model(videos(batch=4), labels=torch.tensor([0, 0, 1, 2]))
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {"prompt_learner.ctx", "visual_prompt.delta", "reciprocal_points.images", "reciprocal_points.radius"}
    if pooling == "attention":
        expected |= {"temporal_pooling.query", "temporal_pooling.text_guidance"}
    assert trainable == expected
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_optimizer_step_changes_text_context(make_model):
    model = make_model().train()
    before = model.prompt_learner.ctx.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(videos(), labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    assert not torch.equal(model.prompt_learner.ctx, before)


def test_activation_checkpointing_keeps_loss_and_gradients_and_drops_activations(make_model):
    """Checkpointing recomputes the encoder layers in backward: the same loss and gradients, fewer saved tensors."""

    def step(model) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved: dict[int, int] = {}

        def pack(tensor):
            if tensor.untyped_storage().data_ptr() not in weights:
                saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = model(videos(batch=4), labels=torch.tensor([0, 0, 1, 2]))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return out.loss.detach(), grads, sum(saved.values())

    plain = make_model().train()
    checkpointed = make_model().train()
    checkpointed.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in checkpointed.vision_model.encoder.layers)
    loss, grads, saved = step(plain)
    loss_ckpt, grads_ckpt, saved_ckpt = step(checkpointed)
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads_ckpt.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert saved_ckpt < 0.7 * saved, (saved_ckpt, saved)


def test_unfrozen_vision_tower_trains(make_model):
    model = make_model(freeze_vision_tower=False)
    assert all(p.requires_grad for p in model.vision_model.parameters())
    assert not any(p.requires_grad for p in model.text_model.parameters())


def test_zero_weight_removes_term(make_model):
    model = make_model(known_contrastive_weight=0.0, negative_clip_weight=0.0)
    out = model(videos(), labels=torch.tensor([0, 1]))
    assert set(out.loss_terms) == {"known_ce", "negative_ce", "hybrid_ce"}
    torch.testing.assert_close(out.loss, sum(out.loss_terms.values()))


def test_from_clip_matches_clip_features(make_model, tiny_clip_dir):
    model = make_model().eval()
    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    images = torch.randn(3, 3, 32, 32)
    ids = tokenizer(["a happy face.", "sad", "this video is not neutral."], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_image_features(images).pooler_output, clip.get_image_features(pixel_values=images).pooler_output
        )
        torch.testing.assert_close(
            model.get_text_features(ids["input_ids"]).pooler_output, clip.get_text_features(**ids).pooler_output
        )
        # The learned prompt with its context replaced by real token embeddings is CLIP's text feature of that text.
        filler = tokenizer("x " * model.config.n_ctx)["input_ids"][1:-1]
        learner = model.prompt_learner
        learner.ctx.copy_(model.text_model.embeddings.token_embedding.weight[filler].expand_as(learner.ctx))
        prompts = [("x " * model.config.n_ctx) + f"{label}." for label in LABELS]
        reference = clip.get_text_features(**tokenizer(prompts, padding=True, return_tensors="pt")).pooler_output
        torch.testing.assert_close(model.class_text_embeds(), reference, atol=1e-5, rtol=1e-5)
        # The negative prompts are CLIP's features of "This video is not <label>."
        negatives = [f"This video is not {label}." for label in LABELS]
        reference = clip.get_text_features(**tokenizer(negatives, padding=True, return_tensors="pt")).pooler_output
        torch.testing.assert_close(model.negative_text_embeds(), reference, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.logit_scale, clip.logit_scale)


def test_patch_embedding_through_a_gradient_equals_the_convolution(make_model, tiny_clip_dir):
    """The patch embedding is the convolution bit for bit without a gradient; with one (the pixel prompt trains
    through it) it is a matmul on the CPU, equal up to rounding, forward and backward, to stock CLIP's convolution."""
    model = make_model().eval()
    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    layer, reference = model.vision_model.embeddings.patch_embedding, clip.vision_model.embeddings.patch_embedding
    assert layer.kernel_size == layer.stride == (8, 8)
    with torch.no_grad():
        assert torch.equal(layer(images), reference(images))
    ours, theirs = images.clone().requires_grad_(True), images.clone().requires_grad_(True)
    features = model.get_image_features(ours).pooler_output
    expected = clip.get_image_features(pixel_values=theirs).pooler_output
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(features.shape, generator=torch.Generator().manual_seed(2))
    (features * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-5)
    # An unfrozen tower gets the same weight gradient too.
    layer.weight.requires_grad_(True)
    weight = layer.weight.detach().clone().requires_grad_(True)
    direct = torch.nn.functional.conv2d(images, weight, stride=8)
    patches = layer(images)
    assert patches.shape == direct.shape
    torch.testing.assert_close(patches, direct, atol=1e-5, rtol=1e-5)
    patches.square().sum().backward()
    direct.square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, weight.grad, atol=1e-4, rtol=1e-5)


def test_from_clip_rejects_bad_labels(tiny_clip_dir):
    with pytest.raises(ValueError, match="reserved"):
        HESPForOpenSetVideoClassification.from_clip(str(tiny_clip_dir), labels=["happy", "unknown"])
    with pytest.raises(ValueError, match="distinct"):
        HESPForOpenSetVideoClassification.from_clip(str(tiny_clip_dir), labels=["sad", "sad"])


def test_config_validation(make_model):
    config = make_model().config.to_dict()
    for field, value, message in [
        ("visual_prompt_size", 64, "visual_prompt_size"),
        ("num_frames", 0, "num_frames"),
        ("n_ctx", 60, "max_position_embeddings"),
        ("visual_prompt_center", [40, 3], "visual_prompt_center"),
    ]:
        with pytest.raises(Exception, match=message):
            HESPConfig(**{**config, field: value})
    with pytest.raises(Exception, match="temporal_pooling"):
        HESPConfig(**{**config, "temporal_pooling": "max"})
    with pytest.raises(ValueError, match="class_token_ids is empty"):
        HESPForOpenSetVideoClassification(HESPConfig())


def test_frozen_text_features_are_computed_once(make_model):
    model = make_model().train()
    calls = []
    original = model.encode_text_embeds

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    model.encode_text_embeds = counting
    for _ in range(3):
        model(videos(), labels=torch.tensor([0, 1])).loss.backward()
    # 3 steps re-encode the learned prompts (K each) but the negative prompts (K) only once.
    assert calls == [K] * 4
    model.eval()
    calls.clear()
    with torch.no_grad():
        model(videos())
        model(videos())
    assert calls == [K]  # eval: the learned prompts are encoded once per model state


def test_estimate_visual_prompt_location(make_model):
    model = make_model().eval()
    size = model.visual_prompt.size
    before = model.config.visual_prompt_center
    center = model.estimate_visual_prompt_location([videos(), videos(seed=1)])
    assert model.config.visual_prompt_center == before  # estimating changes nothing; the caller stores it
    assert all(size // 2 <= c <= 32 - (size - size // 2) for c in center)
    # The chosen square is the one with the highest mean saliency, checked by brute force.
    frames = torch.cat([videos(), videos(seed=1)]).flatten(0, 1)
    mean_map = model.saliency_maps(frames).mean(0)
    scores = {
        (r, c): mean_map[r : r + size, c : c + size].mean().item()
        for r in range(32 - size + 1)
        for c in range(32 - size + 1)
    }
    best = max(scores, key=scores.get)
    assert [best[0] + size // 2, best[1] + size // 2] == center


def test_visual_prompt_is_added_inside_the_square_only(make_model):
    model = make_model(visual_prompt_center=[10, 20]).eval()
    with torch.no_grad():
        model.visual_prompt.delta.fill_(0.5)
    frames = torch.zeros(2, 3, 32, 32)
    prompted = model.add_visual_prompt(frames, model.class_text_embeds())
    size = model.visual_prompt.size  # 8 at 32 px
    top, left = 10 - size // 2, 20 - size // 2
    std = torch.tensor(model.config.image_std)
    expected = torch.zeros(2, 3, 32, 32)
    expected[:, :, top : top + size, left : left + size] = (0.5 / std)[:, None, None]
    torch.testing.assert_close(prompted, expected)
    # per-frame placement at given corners equals the single-location placement.
    per_frame = model.visual_prompt.add_per_frame(frames, torch.tensor([top, top]), torch.tensor([left, left]))
    torch.testing.assert_close(per_frame, expected)


def test_ablation_switches(make_model):
    no_prompt = make_model(use_visual_prompt=False).eval()
    frames = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        no_prompt.visual_prompt.delta.fill_(1.0)
    assert torch.equal(no_prompt.add_visual_prompt(frames, no_prompt.class_text_embeds()), frames)
    assert not no_prompt.visual_prompt.delta.requires_grad

    clip_only = make_model(use_reciprocal_points=False).train()
    out = clip_only(videos(), labels=torch.tensor([0, 1]))
    assert out.reciprocal_logits is None and out.negative_visual_embeds is None
    torch.testing.assert_close(out.logits[:, :K], out.clip_logits)
    assert set(out.loss_terms) == {"known_ce", "known_contrastive"}
    out.loss.backward()
    assert clip_only.prompt_learner.ctx.grad is not None
    assert not clip_only.reciprocal_points.images.requires_grad


def test_max_softmax_score_and_its_unknown_column(make_model):
    model = make_model(open_set_score="max_softmax").eval()
    batch = videos(batch=6, seed=4)
    with torch.no_grad():
        out = model(batch)
        ensemble = (out.clip_logits + out.reciprocal_logits) / 2
        torch.testing.assert_close(out.open_set_score, ensemble.softmax(-1).max(-1).values)
        assert (out.logits.argmax(-1) < K).all()  # uncalibrated
        scores = out.open_set_score.sort().values
        threshold = float((scores[2] + scores[3]) / 2)  # between the 3rd and 4th lowest scores
        model.config.unknown_threshold = threshold
        decided = model(batch)
    rejected = decided.logits.argmax(-1) == K
    assert torch.equal(rejected, decided.open_set_score < threshold) and int(rejected.sum()) == 3
    torch.testing.assert_close(decided.logits[:, :K], ensemble)  # the known columns are untouched
    config = model.config.to_dict()
    with pytest.raises(Exception, match="probability"):
        HESPConfig(**{**config, "unknown_threshold": 1.5})


@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("score", ["max_logit", "max_softmax"])
def test_the_unknown_column_wins_exactly_when_the_score_is_below_the_threshold(make_model, score, temperature):
    """At the rounding edge too: CLIP-scale logits saturate the max-softmax score at 1.0 (a clip just below a
    threshold of 1.0 left a column tied with the best logit, which the arg-max gave to the known class), and
    thresholds one float32 step either side of a score. The rule is `hesp_hf.inference.decisions`': known when
    score >= threshold, in float64."""
    model = make_model(open_set_score=score)
    model.config.probability_temperature = temperature
    generator = torch.Generator().manual_seed(3)
    known_logits = torch.cat(
        [
            torch.tensor([[18.4709, 2.0268, -0.3950], [0.0, 0.0, 0.0], [1e-3, 0.0, -1.0]]),
            torch.randn(60, K, generator=generator) * torch.tensor([0.5, 5.0, 40.0]).repeat_interleave(20)[:, None],
        ]
    )
    scores, _ = model.unknown_column(known_logits)
    thresholds = {1.0} if score == "max_softmax" else set()
    for value in scores[::4].tolist():
        below, above = torch.nextafter(torch.tensor([value, value]), torch.tensor([-math.inf, math.inf])).tolist()
        thresholds |= {below, value, above}
    thresholds = {t for t in thresholds if score == "max_logit" or 0 < t <= 1}
    assert len(thresholds) > 30
    for threshold in sorted(thresholds):
        model.config.unknown_threshold = threshold
        found, logits = model.open_set_logits(known_logits)
        torch.testing.assert_close(found, scores)
        expected_unknown = [s < threshold for s in found.double().tolist()]
        assert (logits.argmax(-1) == K).tolist() == expected_unknown, threshold
        torch.testing.assert_close(logits[:, :K], known_logits / temperature)  # the known columns untouched


@pytest.mark.parametrize("score", ["max_logit", "max_softmax"])
def test_clip_inference_logits_predict_and_score_with_the_clip_branch(make_model, score):
    ensemble_model = make_model(open_set_score=score)
    clip_model = make_model(open_set_score=score, inference_logits="clip")
    batch, labels = videos(batch=4, seed=5), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        reference = ensemble_model.train()(batch, labels=labels)
        out = clip_model.train()(batch, labels=labels)
    # Training is unchanged: the same five terms and the same total.
    assert out.loss_terms.keys() == reference.loss_terms.keys()
    torch.testing.assert_close(out.loss, reference.loss)
    torch.testing.assert_close(out.reciprocal_logits, reference.reciprocal_logits)
    # Prediction and known-ness come from the CLIP logits alone.
    torch.testing.assert_close(out.logits[:, :K], out.clip_logits)
    expected = out.clip_logits.max(-1).values if score == "max_logit" else out.clip_logits.softmax(-1).max(-1).values
    torch.testing.assert_close(out.open_set_score, expected)
    assert not torch.allclose(reference.logits[:, :K], out.clip_logits)
    with pytest.raises(Exception, match="inference_logits"):
        HESPConfig(**{**clip_model.config.to_dict(), "inference_logits": "reciprocal"})


@pytest.mark.parametrize("distance", ["arpl", "l2"])
def test_reciprocal_distance_matches_its_definition(make_model, distance):
    """Written out per clip and class from the papers: RPL's `||v - p_k||^2 / D`; ARPL's (the HESP paper's) adds
    `- v.p_k`. The ensemble and the loss use the logits of the configured distance."""
    model = make_model(reciprocal_distance=distance).eval()
    out = model(videos(), labels=torch.tensor([0, 2]))
    v, p = out.video_embeds.double(), out.negative_visual_embeds.double()
    expected = torch.empty(B, K, dtype=torch.float64)
    for i in range(B):
        for k in range(K):
            squared = ((v[i] - p[k]) ** 2).sum() / v.shape[-1]
            expected[i, k] = squared - (v[i] @ p[k] if distance == "arpl" else 0.0)
    torch.testing.assert_close(out.reciprocal_logits.double(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.logits[:, :K], (out.clip_logits + out.reciprocal_logits) / 2)
    with pytest.raises(Exception, match="reciprocal_distance"):
        HESPConfig(**{**model.config.to_dict(), "reciprocal_distance": "cosine"})


def test_frame_embeds_input_equals_pixels(make_model):
    """Cached frame features give what the pixels give (without the visual prompt, which acts on pixels)."""
    model = make_model(use_visual_prompt=False, temporal_pooling="attention").eval()
    pixels = videos()
    with torch.no_grad():
        frame_embeds = model.image_embeds(pixels.flatten(0, 1)).view(B, T, -1)
    from_pixels = model(pixels, labels=torch.tensor([1, 0]))
    from_features = model(frame_embeds=frame_embeds, labels=torch.tensor([1, 0]))
    torch.testing.assert_close(from_features.logits, from_pixels.logits)
    torch.testing.assert_close(from_features.loss, from_pixels.loss)
    with pytest.raises(ValueError, match="exactly one"):
        model(pixels, frame_embeds=frame_embeds)
    with pytest.raises(ValueError, match="visual prompt"):
        make_model()(frame_embeds=frame_embeds)


def test_configs_saved_before_reciprocal_distance_load_as_arpl(make_model, tmp_path):
    """Checkpoints written before the field existed were trained with the paper's distance: they keep it."""
    import json

    model = make_model()
    model.config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["reciprocal_distance"] == "l2"  # today's default, written out
    del saved["reciprocal_distance"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert AutoConfig.from_pretrained(tmp_path).reciprocal_distance == "arpl"
    assert HESPConfig(**{k: v for k, v in saved.items() if k != "model_type"}).reciprocal_distance == "l2"


def test_from_clip_does_not_report_its_new_modules_as_missing_weights(tiny_clip_dir, capfd):
    """HESP's own modules are new by design, declared expected-missing as the library declares them: no MISSING
    table, and none of them in the loading report; the library's logging settings are left as they were."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    HESPForOpenSetVideoClassification.from_clip(str(tiny_clip_dir), labels=LABELS)
    captured = capfd.readouterr()
    assert "MISSING" not in captured.out + captured.err
    assert transformers_logging.get_verbosity() == verbosity


@pytest.mark.parametrize("bars", [True, False])
def test_loading_leaves_the_progress_bar_setting_to_the_user(make_model, tmp_path, capfd, bars, monkeypatch):
    """No global switch flipped around a load (another thread loading a model at the same time would see it): the
    library's bar shows exactly when the user's setting says so."""
    from transformers.utils import logging as transformers_logging

    make_model().save_pretrained(tmp_path)
    switch = transformers_logging.enable_progress_bar if bars else transformers_logging.disable_progress_bar
    switch()
    try:
        for name in ("enable_progress_bar", "disable_progress_bar", "set_verbosity", "set_verbosity_error"):
            monkeypatch.setattr(transformers_logging, name, lambda *a, _n=name: pytest.fail(f"{_n} was called"))
        capfd.readouterr()
        AutoModel.from_pretrained(tmp_path)
        captured = capfd.readouterr()
    finally:
        monkeypatch.undo()
        transformers_logging.enable_progress_bar()
    assert ("Loading weights" in captured.out + captured.err) == bars


def test_return_dict_false_is_the_outputs_to_tuple(make_model):
    """As the library's models (`can_return_tuple`): the tuple form is `to_tuple()` of the same output."""
    model = make_model().eval()
    clips, labels = videos(), torch.tensor([0, 1])
    with torch.no_grad():
        named = model(pixel_values_videos=clips, labels=labels)
        plain = model(pixel_values_videos=clips, labels=labels, return_dict=False)
    expected = named.to_tuple()
    assert isinstance(plain, tuple) and len(plain) == len(expected)
    for got, want in zip(plain, expected, strict=True):
        if isinstance(want, dict):
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        else:
            assert torch.equal(got, want)
    assert torch.equal(plain[0], named.loss) and torch.equal(plain[1], named.logits)


def test_hidden_states_and_attentions_of_every_frame(make_model, tiny_clip_dir, tmp_path):
    """As transformers' video models: `output_hidden_states` / `output_attentions` give the vision tower's own
    tensors under `hidden_states` / `attentions` (frames clip-major); the tuple form ends with them; attentions need
    eager attention, chosen at loading."""
    model = make_model()
    model.save_pretrained(tmp_path)
    model = HESPForOpenSetVideoClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    vision = model.config.vision_config
    clips = videos()
    B, T = clips.shape[:2]
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    with torch.no_grad():
        output = model(pixel_values_videos=clips, output_hidden_states=True, output_attentions=True)
        plain = model(pixel_values_videos=clips, output_hidden_states=True, output_attentions=True, return_dict=False)
        frame_alone = model.get_image_features(clips[1, 2:3], output_hidden_states=True)
    assert len(output.hidden_states) == vision.num_hidden_layers + 1
    assert all(h.shape == (B * T, tokens, vision.hidden_size) for h in output.hidden_states)
    assert len(output.attentions) == vision.num_hidden_layers
    assert all(a.shape == (B * T, vision.num_attention_heads, tokens, tokens) for a in output.attentions)
    # Row 1 * T + 2 is frame 2 of clip 1: that frame's own hidden state (the visual prompt is zero at initialisation).
    torch.testing.assert_close(output.hidden_states[-1][1 * T + 2], frame_alone.hidden_states[-1][0])
    assert plain[-1] is not None and torch.equal(plain[-1][-1], output.attentions[-1])
    assert torch.equal(plain[-2][-1], output.hidden_states[-1])
    without = model(pixel_values_videos=clips)
    assert without.hidden_states is None and without.attentions is None


def test_old_output_names_still_read_with_a_deprecation_warning(make_model):
    """`vision_hidden_states` / `vision_attentions` (before 0.2) read for one minor version: the same tensors per
    clip `(B, T, ...)`, as they were, with a FutureWarning naming the new field."""
    model = make_model().eval()
    model.set_attn_implementation("eager")  # attention weights need eager attention
    clips = videos()
    B, T = clips.shape[:2]
    with torch.no_grad():
        output = model(pixel_values_videos=clips, output_hidden_states=True, output_attentions=True)
    with pytest.warns(FutureWarning, match=r"vision_hidden_states is deprecated .* read `hidden_states`"):
        old = output.vision_hidden_states
    assert len(old) == len(output.hidden_states)
    assert all(torch.equal(o, n.view(B, T, *n.shape[1:])) for o, n in zip(old, output.hidden_states, strict=True))
    with pytest.warns(FutureWarning, match="read `attentions`"):
        old_attentions = output["vision_attentions"]
    assert torch.equal(old_attentions[0][1, 3], output.attentions[0][1 * T + 3])
    assert "vision_hidden_states" not in output.keys()  # not a field: the tuple form has each tensor once


def test_unknown_arguments_are_refused(make_model):
    model = make_model()
    with pytest.raises(TypeError, match=r"unexpected arguments \['output_hidden_state'\]"):
        model(pixel_values_videos=videos(), output_hidden_state=True)


def test_tower_arguments_pass_through(make_model):
    """Keyword arguments the vision tower takes reach it: `interpolate_pos_encoding` reads frames of another size
    (refused without it, as CLIP refuses them), and the Trainer's `num_items_in_batch` is accepted."""
    model = make_model(use_visual_prompt=False).eval()
    larger = torch.nn.functional.interpolate(videos().flatten(0, 1), size=48).unflatten(0, (B, T))
    with torch.no_grad():
        with pytest.raises(ValueError, match="doesn't match model"):
            model(pixel_values_videos=larger)
        output = model(pixel_values_videos=larger, interpolate_pos_encoding=True, num_items_in_batch=torch.tensor(2))
        expected = model.get_image_features(larger.flatten(0, 1), interpolate_pos_encoding=True).pooler_output
    assert output.logits.shape == (B, K + 1)
    torch.testing.assert_close(output.video_embeds, expected.view(B, T, -1).mean(dim=1))


def test_config_json_round_trip(make_model, tmp_path):
    config = make_model(temporal_pooling="attention", unknown_threshold=0.3).config
    config.save_pretrained(tmp_path)

    def settings(c):  # where it was loaded from is not a setting
        return {key: value for key, value in c.to_dict().items() if key != "_name_or_path"}

    assert settings(HESPConfig.from_pretrained(tmp_path)) == settings(config)
    assert settings(HESPConfig.from_json_file(tmp_path / "config.json")) == settings(config)


def test_meta_device_init_then_load(make_model, tmp_path):
    """Built on the meta device (no memory, as `from_pretrained` and big-model loading do), then given the weights:
    the same outputs; the non-persistent token-id buffers come back from the config."""
    model = make_model().eval()
    with torch.device("meta"):
        empty = HESPForOpenSetVideoClassification(model.config)
    assert all(p.is_meta for p in empty.parameters())
    model.save_pretrained(tmp_path)
    loaded = HESPForOpenSetVideoClassification.from_pretrained(tmp_path).eval()
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    with torch.no_grad():
        torch.testing.assert_close(loaded(videos()).logits, model(videos()).logits, rtol=0, atol=0)


@pytest.mark.parametrize("training", [False, True])
def test_compiles_without_graph_breaks(make_model, training):
    """`torch.compile` traces the whole forward in one graph: at inference the prompt-feature caches, in training the
    loss with an unknown clip in the batch (masked out, not indexed out)."""
    model = make_model().train(training)
    labels = torch.tensor([0, -1]) if training else None
    with torch.set_grad_enabled(training):
        explanation = torch._dynamo.explain(model)(videos(), labels=labels)
    assert explanation.graph_break_count == 0, [reason.reason for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_what_is_not_a_checkpoint_is_one_line_naming_it(tmp_path, monkeypatch, run_cli):
    """A folder without config.json, a file, a path that cannot be a Hub id, and an 'owner/name' that is neither a
    local folder nor on the (offline) Hub: each one line naming what was passed, from the library and the command."""
    import huggingface_hub.constants

    from hesp_hf.commands.predict import cli
    from hesp_hf.embedded.video_writer import write_video
    from hesp_hf.inference.deployment import load_for_prediction
    from hesp_hf.pairing import load_pair

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "model.safetensors").write_text("not a folder")
    cases = {
        "empty_run": (ValueError, "empty_run is a folder without config.json, not a saved HESP checkpoint"),
        "model.safetensors": (ValueError, "model.safetensors is a file: pass the checkpoint's folder"),
        "./runs/x": (FileNotFoundError, "./runs/x does not exist (expected a checkpoint folder, or a Hub id"),
        "a/b/c": (FileNotFoundError, "a/b/c does not exist"),
        "runs/x": (OSError, "runs/x is not a local folder, and the Hub did not give it: "),
    }
    for checkpoint, (kind, message) in cases.items():
        for load in (load_pair, load_for_prediction):
            with pytest.raises(kind) as caught:
                load(checkpoint)
            assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)
    write_video(tmp_path / "clip.mp4", random_video(4, 32, 32))
    done = run_cli(cli, "hesp-predict", "--checkpoint", "empty_run", "--output", "rows.jsonl", "clip.mp4")
    assert done.returncode == 2 and done.stderr.startswith("hesp-predict: error: empty_run is a folder without")
    assert not (tmp_path / "rows.jsonl").exists()
