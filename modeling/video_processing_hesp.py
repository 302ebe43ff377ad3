"""HESP video processor: segment sampling, PyAV decoding of files (`video_decoding_hesp`), CLIP resize / crop /
normalisation.

Sampling follows the paper's TSN-style input (HESP, ACM MM 2024, implementation details): `num_frames` equal segments,
the centre of each at inference, a random point inside each for training -- in presentation time for files. This file
travels inside every checkpoint (remote code).
"""

from typing import Any

import numpy as np
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .video_decoding_hesp import VideoDecodeError, decode_video, segment_indices


logger = logging.get_logger(__name__)


class HESPVideosKwargs(VideosKwargs, total=False):
    """`random_sampling`: draw a random frame inside each segment (training) instead of its centre (inference)."""

    random_sampling: bool | None


class HESPVideoProcessor(BaseVideoProcessor):
    """Video processor for HESP: CLIP pixel statistics, resize + centre crop to the vision tower's size, segment
    sampling of `num_frames` frames (random inside segments when `random_sampling=True`), PyAV decoding of files."""

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 8
    random_sampling = False
    valid_kwargs = HESPVideosKwargs
    model_input_names = ["pixel_values_videos"]

    def __init__(self, **kwargs: Unpack[HESPVideosKwargs]) -> None:
        super().__init__(**kwargs)

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        random_sampling: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        num_frames = num_frames if num_frames is not None else self.num_frames
        random_sampling = random_sampling if random_sampling is not None else self.random_sampling
        return segment_indices(int(metadata.total_num_frames), int(num_frames), bool(random_sampling))

    def fetch_videos(self, video_url_or_urls: Any, sample_indices_fn: Any = None) -> Any:
        """Decode paths with PyAV (the stock path needs torchcodec and FFmpeg libraries, often missing), sampled in
        presentation time, upright, warning (naming the file) when a file is shorter than it declares.

        `sample_indices_fn` is the `partial(self.sample_frames, **call_kwargs)` that `preprocess` builds; a file is
        sampled by time rather than by index, so only its `num_frames` / `random_sampling` are used (None: every
        frame)."""
        if isinstance(video_url_or_urls, (list, tuple)):
            decoded = [self.fetch_videos(item, sample_indices_fn=sample_indices_fn) for item in video_url_or_urls]
            return [video for video, _ in decoded], [metadata for _, metadata in decoded]
        path = str(video_url_or_urls)
        if path.startswith(("http://", "https://")):
            raise ValueError(f"HESPVideoProcessor reads local files only; download {path} first.")
        if sample_indices_fn is None:
            decoded = decode_video(path)
        else:
            call_kwargs = getattr(sample_indices_fn, "keywords", {})
            num_frames = call_kwargs.get("num_frames") or self.num_frames
            random_sampling = call_kwargs.get("random_sampling")
            random_sampling = self.random_sampling if random_sampling is None else random_sampling
            decoded = decode_video(path, int(num_frames), bool(random_sampling))
        if decoded.truncated:
            logger.warning(decoded.truncation_message(path))
        return decoded.frames, decoded.metadata

    @classmethod
    def from_clip(cls, pretrained_model_name_or_path: str, num_frames: int = 8, **kwargs: Any) -> "HESPVideoProcessor":
        """A processor matching a CLIP checkpoint: its image processor's size, crop and mean/std when it has one,
        else its vision tower's image size with CLIP's mean/std."""
        from transformers import CLIPConfig
        from transformers.image_processing_base import ImageProcessingMixin

        settings: dict[str, Any] = {}
        try:
            image_processor, _ = ImageProcessingMixin.get_image_processor_dict(pretrained_model_name_or_path)
        except OSError:
            image_processor = {}
        if image_processor:
            for key in ("image_mean", "image_std", "size", "crop_size", "resample", "do_center_crop"):
                if image_processor.get(key) is not None:
                    settings[key] = image_processor[key]
            if isinstance(settings.get("size"), int):
                settings["size"] = {"shortest_edge": settings["size"]}
            if isinstance(settings.get("crop_size"), int):
                settings["crop_size"] = {"height": settings["crop_size"], "width": settings["crop_size"]}
        else:
            image_size = CLIPConfig.from_pretrained(pretrained_model_name_or_path).vision_config.image_size
            settings["size"] = {"shortest_edge": image_size}
            settings["crop_size"] = {"height": image_size, "width": image_size}
        settings.update(kwargs)
        return cls(num_frames=num_frames, **settings)


__all__ = ["HESPVideoProcessor", "VideoDecodeError", "segment_indices"]
