"""Transformers' own common tests (`ModelTesterMixin`, `ConfigTester`, `VideoProcessingTestMixin`) on a tiny HESP, in
the CLIP / X-CLIP tester pattern. Not part of hesp-hf's test suite: `scripts/transformers_common_tests.py` copies it
into the `tests/models/hesp/` folder of the installed transformers version's own tests (fetched, never vendored) and
runs it there."""

import inspect
import unittest

import torch
from torch import nn
from transformers.testing_utils import require_torch, torch_device

from hesp_hf import HESPConfig, HESPForOpenSetVideoClassification, HESPVideoProcessor

from ...test_configuration_common import ConfigTester
from ...test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor
from ...test_video_processing_common import VideoProcessingTestMixin, prepare_video_inputs


class HESPTextModelTester:
    """Token ids for the text tower (CLIP's pattern: the composite tester holds one per tower)."""

    def __init__(self, parent, batch_size=2, seq_length=7, vocab_size=99, num_hidden_layers=2):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.num_hidden_layers = num_hidden_layers

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        input_ids[:, -1] = 1  # each text ends with its EOS (id 1)
        attention_mask = torch.ones_like(input_ids)
        return None, {"input_ids": input_ids, "attention_mask": attention_mask}


class HESPVisionModelTester:
    """Single images for the vision tower (`get_image_features`)."""

    def __init__(self, parent, batch_size=2, image_size=30, num_channels=3, num_hidden_layers=2):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_channels = num_channels
        self.num_hidden_layers = num_hidden_layers

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return None, {"pixel_values": pixel_values}


class HESPModelTester:
    def __init__(
        self,
        parent,
        batch_size=2,
        num_frames=3,
        image_size=30,
        patch_size=6,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=99,
        projection_dim=16,
        num_known=3,
        n_ctx=2,
        is_training=True,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.vocab_size = vocab_size
        self.projection_dim = projection_dim
        self.num_known = num_known
        self.n_ctx = n_ctx
        self.is_training = is_training
        self.seq_length = (image_size // patch_size) ** 2 + 1  # patches and the class token, per frame
        self.num_labels = num_known + 1
        self.text_model_tester = HESPTextModelTester(
            parent, batch_size=batch_size, vocab_size=vocab_size, num_hidden_layers=num_hidden_layers
        )
        self.vision_model_tester = HESPVisionModelTester(
            parent,
            batch_size=batch_size,
            image_size=image_size,
            num_channels=num_channels,
            num_hidden_layers=num_hidden_layers,
        )

    def get_config(self):
        labels = [f"class{i}" for i in range(self.num_known)] + ["unknown"]
        return HESPConfig(
            text_config={
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "max_position_embeddings": 32,
                "bos_token_id": 0,
                "eos_token_id": 1,
                "pad_token_id": 1,
            },
            vision_config={
                "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "num_channels": self.num_channels,
            },
            projection_dim=self.projection_dim,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            class_token_ids=[[0, 10 + i, 5, 1] for i in range(self.num_known)],
            negative_prompt_token_ids=[[0, 20, 21, 10 + i, 5, 1] for i in range(self.num_known)],
            n_ctx=self.n_ctx,
            num_frames=self.num_frames,
            freeze_vision_tower=False,
            freeze_text_tower=False,
        )

    def prepare_config_and_inputs(self):
        pixel_values_videos = floats_tensor(
            [self.batch_size, self.num_frames, self.num_channels, self.image_size, self.image_size]
        )
        return self.get_config(), pixel_values_videos

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values_videos = self.prepare_config_and_inputs()
        return config, {"pixel_values_videos": pixel_values_videos}

    def create_and_check_model(self, config, pixel_values_videos):
        model = HESPForOpenSetVideoClassification(config).to(torch_device).eval()
        with torch.no_grad():
            result = model(pixel_values_videos)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))


@require_torch
class HESPModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (HESPForOpenSetVideoClassification,)
    test_resize_embeddings = False  # the text tower is reached through prompts, not input ids
    _is_composite = True  # a text and a vision tower with their own sub-configs, as CLIPModel

    def setUp(self):
        self.model_tester = HESPModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=HESPConfig, has_text_modality=False, common_properties=["projection_dim"]
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:  # a video classifier (the static mapping does not list registered models)
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long, device=torch_device)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    @unittest.skip(reason="HESP takes frames, not inputs_embeds (as CLIP's vision model)")
    def test_inputs_embeds(self):
        pass

    def test_model_get_set_embeddings(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = HESPForOpenSetVideoClassification(config)
        self.assertIsInstance(model.get_input_embeddings(), nn.Module)
        output = model.get_output_embeddings()
        self.assertTrue(output is None or isinstance(output, nn.Linear))

    def test_forward_signature(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = HESPForOpenSetVideoClassification(config)
        arg_names = [*inspect.signature(model.forward).parameters]
        self.assertListEqual(arg_names[:1], ["pixel_values_videos"])


class HESPVideoProcessingTester:
    def __init__(
        self,
        parent,
        batch_size=5,
        num_frames=8,
        num_channels=3,
        min_resolution=30,
        max_resolution=80,
        size=None,
        crop_size=None,
        image_mean=(0.48145466, 0.4578275, 0.40821073),
        image_std=(0.26862954, 0.26130258, 0.27577711),
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.num_channels = num_channels
        self.min_resolution = min_resolution
        self.max_resolution = max_resolution
        self.size = size or {"shortest_edge": 20}
        self.crop_size = crop_size or {"height": 18, "width": 18}
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)

    def prepare_video_processor_dict(self):
        return {
            "do_resize": True,
            "size": self.size,
            "do_center_crop": True,
            "crop_size": self.crop_size,
            "do_normalize": True,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "do_convert_rgb": True,
            "num_frames": self.num_frames,
        }

    def expected_output_video_shape(self, videos):
        return self.num_frames, self.num_channels, self.crop_size["height"], self.crop_size["width"]

    def prepare_video_inputs(self, equal_resolution=False, return_tensors="pil"):
        return prepare_video_inputs(
            batch_size=self.batch_size,
            num_frames=self.num_frames,
            num_channels=self.num_channels,
            min_resolution=self.min_resolution,
            max_resolution=self.max_resolution,
            equal_resolution=equal_resolution,
            return_tensors=return_tensors,
        )


@require_torch
class HESPVideoProcessingTest(VideoProcessingTestMixin, unittest.TestCase):
    fast_video_processing_class = HESPVideoProcessor

    def setUp(self):
        super().setUp()
        self.video_processor_tester = HESPVideoProcessingTester(self)

    @property
    def video_processor_dict(self):
        return self.video_processor_tester.prepare_video_processor_dict()

    def test_call_sample_frames(self):
        """The mixin's checks, except its last one: HESP's documented difference is that a clip with fewer frames
        than asked for repeats frames instead of raising (short clips stay usable)."""
        from transformers.video_utils import VideoMetadata

        processor = HESPVideoProcessor(**self.video_processor_dict)
        self.video_processor_tester.num_frames = 8
        videos = self.video_processor_tester.prepare_video_inputs(equal_resolution=False, return_tensors="torch")
        processor.do_sample_frames = False
        self.assertEqual(processor(videos[0], return_tensors="pt", num_frames=3)["pixel_values_videos"].shape[1], 8)
        processor.do_sample_frames = True
        self.assertEqual(processor(videos, return_tensors="pt", num_frames=3)["pixel_values_videos"].shape[1], 3)
        with self.assertRaises(ValueError):
            processor.sample_frames(metadata=VideoMetadata(total_num_frames=8), fps=3)
        metadata = [[{"duration": 2.0, "total_num_frames": 8, "fps": 4}]]
        encoded = processor(videos[0], return_tensors="pt", fps=3, video_metadata=metadata)["pixel_values_videos"]
        batched = processor(videos, return_tensors="pt", fps=3, video_metadata=metadata * len(videos))
        self.assertEqual(encoded.shape[1], 6)
        self.assertEqual(batched["pixel_values_videos"].shape[1], 6)
        metadata = [[VideoMetadata(duration=2.0, total_num_frames=8, fps=4)]]
        encoded = processor(videos[0], return_tensors="pt", fps=3, video_metadata=metadata)["pixel_values_videos"]
        self.assertEqual(encoded.shape[1], 6)
        # The documented difference: 10 frames from 8 repeat two of them.
        encoded = processor(videos[0], return_tensors="pt", num_frames=10)["pixel_values_videos"]
        self.assertEqual(encoded.shape[1], 10)
