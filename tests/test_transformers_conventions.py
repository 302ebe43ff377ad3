"""HESP behaves as a Transformers 5.x model where the library's own common tests look, in the library's model_tester style:
a `HESPModelTester` builds a tiny config and inputs; the checks are on output names and shapes, gradients through the
returned hidden states, the tuple form, the feature methods' signatures against `CLIPModel`'s, the input embeddings
under gradient checkpointing, and one initialisation for both construction paths."""

import inspect

import pytest
import torch
from torch import nn
from transformers import CLIPModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from hesp_hf import HESPConfig, HESPForOpenSetVideoClassification


class HESPModelTester:
    """Tiny HESP configs and inputs, as the library's model testers build them (CLIP's sizes: 2 layers, width 32)."""

    def __init__(
        self,
        batch_size: int = 2,
        num_frames: int = 3,
        image_size: int = 30,
        patch_size: int = 6,
        hidden_size: int = 32,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        vocab_size: int = 99,
        projection_dim: int = 16,
        num_known: int = 3,
    ):
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.vocab_size = vocab_size
        self.projection_dim = projection_dim
        self.num_known = num_known
        self.seq_length = (image_size // patch_size) ** 2 + 1  # patches and the class token, per frame

    def get_config(self, **overrides) -> HESPConfig:
        labels = [f"class{i}" for i in range(self.num_known)] + ["unknown"]
        tower = {
            "hidden_size": self.hidden_size,
            "intermediate_size": 37,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
        }
        fields = {
            "text_config": {**tower, "vocab_size": self.vocab_size, "max_position_embeddings": 32, "eos_token_id": 1},
            "vision_config": {**tower, "image_size": self.image_size, "patch_size": self.patch_size},
            "projection_dim": self.projection_dim,
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "class_token_ids": [[0, 10 + i, 5, 1] for i in range(self.num_known)],
            "negative_prompt_token_ids": [[0, 20, 21, 10 + i, 5, 1] for i in range(self.num_known)],
            "n_ctx": 2,
            "num_frames": self.num_frames,
        }
        return HESPConfig(**{**fields, **overrides})

    def prepare_config_and_inputs_for_common(self, **overrides) -> tuple[HESPConfig, dict[str, torch.Tensor]]:
        shape = (self.batch_size, self.num_frames, 3, self.image_size, self.image_size)
        pixels = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        return self.get_config(**overrides), {"pixel_values_videos": pixels}


@pytest.fixture
def model_tester() -> HESPModelTester:
    return HESPModelTester()


def test_hidden_states_and_attentions_are_the_towers_and_carry_gradients(model_tester):
    """`retain_grad()` on the returned hidden states and attentions gives them a gradient: they are the tensors the
    logits are computed from (as the library's `test_retain_grad_hidden_states_attentions` checks)."""
    config, inputs = model_tester.prepare_config_and_inputs_for_common(freeze_vision_tower=False)
    model = HESPForOpenSetVideoClassification(config)
    model.set_attn_implementation("eager")
    output = model(**inputs, output_hidden_states=True, output_attentions=True)
    frames = model_tester.batch_size * model_tester.num_frames
    assert len(output.hidden_states) == model_tester.num_hidden_layers + 1
    assert output.hidden_states[0].shape == (frames, model_tester.seq_length, model_tester.hidden_size)
    assert len(output.attentions) == model_tester.num_hidden_layers
    assert output.attentions[0].shape == (
        frames,
        model_tester.num_attention_heads,
        model_tester.seq_length,
        model_tester.seq_length,
    )
    first_hidden, first_attention = output.hidden_states[0], output.attentions[0]
    first_hidden.retain_grad()
    first_attention.retain_grad()
    output.logits[:, 0].sum().backward()
    assert first_hidden.grad is not None and first_hidden.grad.abs().sum() > 0
    assert first_attention.grad is not None and first_attention.grad.abs().sum() > 0


@pytest.mark.parametrize("with_labels", [False, True])
def test_return_dict_false_tuple_equals_the_dataclass(model_tester, with_labels):
    config, inputs = model_tester.prepare_config_and_inputs_for_common()
    model = HESPForOpenSetVideoClassification(config).eval()
    if with_labels:
        inputs["labels"] = torch.tensor([0, 2])
    with torch.no_grad():
        named = model(**inputs, output_hidden_states=True)
        plain = model(**inputs, output_hidden_states=True, return_dict=False)
        config.return_dict = False  # the config's setting, as the library's models read it
        from_config = model(**inputs, output_hidden_states=True)
    names = [name for name, value in named.items() if value is not None]
    assert names[-1] == "hidden_states" and names[: 2 if with_labels else 1] == (
        ["loss", "logits"] if with_labels else ["logits"]
    )
    for tuple_form in (plain, from_config):
        assert isinstance(tuple_form, tuple) and len(tuple_form) == len(names)
        for name, value in zip(names, tuple_form, strict=True):
            expected = named[name]
            if isinstance(expected, dict):
                assert value.keys() == expected.keys() and all(torch.equal(value[k], expected[k]) for k in expected)
            elif isinstance(expected, tuple):
                assert all(torch.equal(a, b) for a, b in zip(value, expected, strict=True))
            else:
                assert torch.equal(value, expected), name


@pytest.mark.parametrize("method", ["get_text_features", "get_image_features"])
def test_feature_methods_take_clip_models_arguments(method):
    """Same parameters (names, order, defaults, kinds) as `CLIPModel`'s in the installed transformers."""
    ours = inspect.signature(getattr(HESPForOpenSetVideoClassification, method)).parameters
    clip = inspect.signature(getattr(CLIPModel, method)).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [(p.name, p.kind, p.default) for p in clip.values()]


def test_feature_methods_return_what_clip_model_returns(model_tester):
    """The towers' outputs with the projected features as `pooler_output`: equal to a `CLIPModel` holding the same
    weights, with the mask and `return_dict=False` honoured."""
    config, _ = model_tester.prepare_config_and_inputs_for_common()
    model = HESPForOpenSetVideoClassification(config).eval()
    clip = CLIPModel(config).eval()
    clip.load_state_dict(model.state_dict(), strict=False)  # the CLIP part, under CLIP's own names
    input_ids = torch.tensor([[0, 12, 13, 1, 1], [0, 14, 1, 1, 1]])
    attention_mask = (torch.arange(5)[None] <= torch.tensor([[3], [2]])).long()
    images = torch.randn(2, 3, model_tester.image_size, model_tester.image_size)
    with torch.no_grad():
        text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        image = model.get_image_features(pixel_values=images, output_hidden_states=True)
        expected_text = clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        expected_image = clip.get_image_features(pixel_values=images, output_hidden_states=True)
        plain = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
    assert isinstance(text, BaseModelOutputWithPooling) and isinstance(image, BaseModelOutputWithPooling)
    assert text.pooler_output.shape == (2, model_tester.projection_dim)
    torch.testing.assert_close(text.pooler_output, expected_text.pooler_output, rtol=0, atol=0)
    torch.testing.assert_close(text.last_hidden_state, expected_text.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(image.pooler_output, expected_image.pooler_output, rtol=0, atol=0)
    assert len(image.hidden_states) == model_tester.num_hidden_layers + 1
    assert isinstance(plain, tuple) and torch.equal(plain[0], text.last_hidden_state)
    assert torch.equal(plain[1], text.pooler_output)


def test_input_embeddings_are_the_patch_embedding_and_train_under_gradient_checkpointing(model_tester):
    """As `CLIPVisionModel`: `get_input_embeddings()` is the layer frames enter by; with every weight frozen (an
    adapter's setting) and gradient checkpointing on, `enable_input_require_grads` lets a gradient through it."""
    config, inputs = model_tester.prepare_config_and_inputs_for_common(freeze_vision_tower=False)
    model = HESPForOpenSetVideoClassification(config)
    embedding = model.get_input_embeddings()
    assert embedding is model.vision_model.embeddings.patch_embedding and isinstance(embedding, nn.Conv2d)
    model.train()
    model.requires_grad_(False)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    seen = []
    embedding.register_forward_hook(lambda module, args, output: seen.append(output))
    output = model(**inputs)
    seen[0].retain_grad()
    output.logits[:, :-1].sum().backward()
    assert seen[0].requires_grad and seen[0].grad is not None and seen[0].grad.abs().sum() > 0
    replacement = nn.Conv2d(
        3, model_tester.hidden_size, model_tester.patch_size, stride=model_tester.patch_size, bias=False
    )
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement


@pytest.mark.parametrize("overrides", [{}, {"temporal_pooling": "attention"}, {"inference_only": True}])
def test_both_construction_paths_initialise_every_weight_alike(model_tester, monkeypatch, overrides):
    """`HESPForOpenSetVideoClassification(config)` and `from_pretrained(None, config=config, state_dict={})` give
    the same value to every parameter and buffer when each module's initialisation draws from the same seed (so a
    weight initialised by different code on the two paths shows as a difference)."""
    original = PreTrainedModel._initialize_weights

    def seeded(self, module, *args, **kwargs):
        torch.manual_seed(1234)
        return original(self, module, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)
    config = model_tester.get_config(**overrides)
    built = HESPForOpenSetVideoClassification(config).state_dict()
    loaded = HESPForOpenSetVideoClassification.from_pretrained(None, config=config, state_dict={}).state_dict()
    assert built.keys() == loaded.keys()
    different = sorted(name for name in built if not torch.equal(built[name], loaded[name]))
    assert different == []
    # And the towers follow CLIP's scheme (not the generic std 0.02 of a plain linear layer).
    width = model_tester.hidden_size
    expected_std = width**-0.5 * (2 * model_tester.num_hidden_layers) ** -0.5
    q_proj = loaded["vision_model.encoder.layers.0.self_attn.q_proj.weight"]
    assert abs(q_proj.std().item() - expected_std) < 0.25 * expected_std
