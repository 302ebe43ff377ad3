# Copyright 2026 The hesp-hf Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""HESP video processor: segment sampling, PyAV decoding of files (`video_decoding_hesp`), CLIP resize / crop /
normalisation.

Sampling follows the paper's TSN-style input (HESP, ACM MM 2024, implementation details): `num_frames` equal segments,
the centre of each at inference, a random point inside each for training -- in presentation time for files. This file
travels inside every checkpoint (remote code).
"""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .configuration_hesp import check_saved_pair, saved_settings, shared_settings
from .face_cropping_hesp import DEFAULT_MARGIN, DEFAULT_MIN_SCORE, FaceTrack
from .video_decoding_hesp import VideoDecodeError, decode_video, segment_indices


logger = logging.get_logger(__name__)

# Face cropping decodes frames at this shorter side (not the model's): the detector looks at 640 px, and a face a third
# of the frame's height still fills a 224-pixel crop without being enlarged.
FACE_CROP_SHORTEST_EDGE = 720


class HESPVideoProcessorKwargs(VideosKwargs, total=False):
    """`random_sampling`: draw a random frame inside each segment (training) instead of its centre (inference).
    `face_crop`: crop every clip to its face first (raw footage; see `face_cropping_hesp`); `face_margin`: the
    margin around the face box, as a share of its longer side; `face_min_score`: the detector score a face needs."""

    random_sampling: bool | None
    face_crop: bool | None
    face_margin: float | None
    face_min_score: float | None


class HESPVideoProcessor(BaseVideoProcessor):
    """Video processor for HESP: CLIP pixel statistics, resize + centre crop to the vision tower's size, segment
    sampling of `num_frames` frames (random inside segments when `random_sampling=True`), PyAV decoding of files.

    Example:

    ```python
    >>> from hesp_hf import HESPVideoProcessor

    >>> processor = HESPVideoProcessor.from_clip("openai/clip-vit-base-patch32", num_frames=8)
    >>> inputs = processor(["a.mp4", "frames_of_b/"], return_tensors="pt")  # files or folders of frame images
    >>> inputs["pixel_values_videos"].shape  # (2, 8, 3, 224, 224)
    >>> raw = HESPVideoProcessor.from_pretrained("runs/dfew-1", face_crop=True)  # webcam or phone footage
    ```
    """

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
    face_crop = False
    face_margin = DEFAULT_MARGIN
    face_min_score = DEFAULT_MIN_SCORE
    valid_kwargs = HESPVideoProcessorKwargs
    model_input_names = ["pixel_values_videos"]

    def __init__(self, **kwargs: Unpack[HESPVideoProcessorKwargs]) -> None:
        super().__init__(**kwargs)

    def preprocess(self, videos: Any, **kwargs: Unpack[HESPVideoProcessorKwargs]) -> Any:
        """As `BaseVideoProcessor.preprocess`; with `face_crop` (this call's, else the saved setting) each clip is
        first cropped to one face followed through its sampled frames, then resized and normalised as usual. A clip
        where no frame shows a face is used whole, with a warning naming it."""
        face_crop = kwargs.pop("face_crop", None)
        margin = kwargs.pop("face_margin", None)
        min_score = kwargs.pop("face_min_score", None)
        self._one_frame_count(kwargs)
        if not (self.face_crop if face_crop is None else face_crop):
            return super().preprocess(videos, **kwargs)
        from functools import partial

        do_sample = kwargs.pop("do_sample_frames", None)
        do_sample = self.do_sample_frames if do_sample is None else do_sample
        sampling = {
            key: kwargs[key] for key in ("num_frames", "fps", "random_sampling") if kwargs.get(key) is not None
        }
        names = (
            [str(v) for v in videos]
            if isinstance(videos, (list, tuple)) and all(isinstance(v, (str, Path)) for v in videos)
            else [str(videos)]
            if isinstance(videos, (str, Path))
            else None
        )
        decoded, _ = self._decode_and_sample_videos(
            videos,
            video_metadata=kwargs.pop("video_metadata", None),
            do_sample_frames=do_sample,
            # the edge rides with the sampling settings: `fetch_videos` reads them from this partial
            sample_indices_fn=partial(self.sample_frames, **sampling, decode_edge=self.decode_edge(face_crop=True))
            if do_sample
            else None,
        )
        cropped = []
        for index, video in enumerate(decoded):
            frames = _as_rgb_uint8(video)
            track = self.track_face(frames, margin=margin, min_score=min_score)
            if not track.found:
                name = names[index] if names else f"clip {index} of the batch"
                logger.warning("No face found in any sampled frame of %s: the whole frame is used.", name)
            cropped.append(self.crop_to_face(frames, track))
        kwargs.pop("num_frames", None)
        kwargs.pop("fps", None)
        return super().preprocess(cropped, do_sample_frames=False, **kwargs)

    def _one_frame_count(self, kwargs: dict[str, Any]) -> None:
        """`num_frames` and `fps` are exclusive (as in the base processor); this call's choice wins over the saved
        defaults, so `fps=...` alone samples by rate although the processor has a `num_frames`."""
        if kwargs.get("fps") is not None and kwargs.get("num_frames") is None:
            kwargs["num_frames"] = None  # not the saved num_frames: the rate decides
        elif kwargs.get("num_frames") is not None and kwargs.get("fps") is None:
            kwargs["fps"] = None
        elif kwargs.get("num_frames") is None and self.fps is not None:
            kwargs["num_frames"] = None  # a processor saved with a rate samples by rate

    def track_face(
        self,
        frames: np.ndarray,
        times: np.ndarray | None = None,
        margin: float | None = None,
        min_score: float | None = None,
    ) -> FaceTrack:
        """One face followed through `frames` `(T, H, W, 3)` uint8 with this processor's face settings (or the
        given ones); `times` lets the track be read at other times of the clip (`FaceTrack.at`)."""
        from .face_cropping_hesp import face_track, shared_detector

        detector = shared_detector(self.face_min_score if min_score is None else min_score)
        return face_track(frames, detector, self.face_margin if margin is None else margin, times=times)

    def crop_to_face(self, frames: np.ndarray, track: FaceTrack, times: np.ndarray | None = None) -> np.ndarray:
        """`frames` cropped to the track's squares (at `times` when given) at the processor's crop size, or
        unchanged when the track found no face."""
        from .face_cropping_hesp import crop_to_track

        return crop_to_track(frames, track, self.face_crop_size, times)

    @property
    def face_crop_size(self) -> int:
        """The side of the square a face is cropped to: the larger side of the crop size (224 without one)."""
        return max(self.crop_size.height or 0, self.crop_size.width or 0) if self.crop_size else 224

    def decode_edge(self, face_crop: bool | None = None) -> int | None:
        """The shorter side at which a file's sampled frames are converted to RGB: what the next step needs, so that
        memory follows the model's input, not the footage (a 4K frame is 24 MB as RGB). The resize's shortest edge,
        or `FACE_CROP_SHORTEST_EDGE` with face cropping (this call's `face_crop`, else the saved setting); None (the
        stored size) when the processor does not resize to a shortest edge."""
        if self.face_crop if face_crop is None else face_crop:
            return FACE_CROP_SHORTEST_EDGE
        size = self.size or {}
        edge = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
        return int(edge) if self.do_resize and edge else None

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: float | None = None,
        random_sampling: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Indices of the frames to keep: `num_frames` equal segments (this processor's by default), or, with `fps`
        and the video's `metadata` (its frame rate), as many frames as `fps` frames per second of the clip gives
        (as the base processor counts them; the model reads any number of frames); `num_frames` and `fps` are
        exclusive. One frame per segment: its centre, or a random point inside it with `random_sampling`.

        The difference from the base processor: a clip with fewer frames than asked for repeats frames (each segment
        still takes the frame on screen there) instead of raising, so short clips are usable."""
        if num_frames is not None and fps is not None:
            raise ValueError(
                f"sample_frames takes num_frames or fps, not both: got num_frames={num_frames}, fps={fps}."
            )
        if fps is not None:
            num_frames = self.frames_at_rate(metadata, fps)
        num_frames = num_frames if num_frames is not None else self.num_frames
        random_sampling = random_sampling if random_sampling is not None else self.random_sampling
        return segment_indices(int(metadata.total_num_frames), int(num_frames), bool(random_sampling))

    @staticmethod
    def frames_at_rate(metadata: VideoMetadata | None, fps: float) -> int:
        """How many frames `fps` frames per second of the clip described by `metadata` gives (at least one)."""
        if not fps > 0:
            raise ValueError(f"fps must be a positive number of frames per second, got {fps}.")
        if metadata is None or not metadata.fps or not metadata.total_num_frames:
            raise ValueError(
                f"Sampling at fps={fps} needs the video's frame rate and frame count in its metadata "
                f"(video_metadata=...), got {metadata}; or pass num_frames."
            )
        return max(1, int(metadata.total_num_frames / metadata.fps * fps))

    def fetch_videos(self, video_url_or_urls: Any, sample_indices_fn: Any = None) -> Any:
        """Decode paths with PyAV (the stock path needs torchcodec and FFmpeg libraries, often missing), sampled in
        presentation time, upright, warning (naming the file) when a file is shorter than it declares.

        `sample_indices_fn` is the `partial(self.sample_frames, **call_kwargs)` that `preprocess` builds; a file is
        sampled by time rather than by index, so only its `num_frames` / `random_sampling` are used (None: every
        frame); with `fps` every frame is decoded and `sample_frames` picks from them with the file's frame rate."""
        if isinstance(video_url_or_urls, (list, tuple)):
            decoded = [self.fetch_videos(item, sample_indices_fn=sample_indices_fn) for item in video_url_or_urls]
            return [video for video, _ in decoded], [metadata for _, metadata in decoded]
        path = str(video_url_or_urls)
        if path.startswith(("http://", "https://")):
            raise ValueError(f"HESPVideoProcessor reads local files only; download {path} first.")
        call_kwargs = getattr(sample_indices_fn, "keywords", {})
        # This call resizes without face cropping unless the face-crop path put its own edge in the partial.
        edge = call_kwargs["decode_edge"] if "decode_edge" in call_kwargs else self.decode_edge(face_crop=False)
        by_rate = sample_indices_fn is not None and call_kwargs.get("fps") is not None
        if sample_indices_fn is None:  # every frame, at the stored size (whether this call crops faces is not known)
            decoded = decode_video(path)
        elif by_rate:  # every frame, at the size the next step needs; `sample_frames` picks by the file's rate
            decoded = decode_video(path, shortest_edge=edge)
        else:
            num_frames = call_kwargs.get("num_frames") or self.num_frames
            random_sampling = call_kwargs.get("random_sampling")
            random_sampling = self.random_sampling if random_sampling is None else random_sampling
            decoded = decode_video(path, int(num_frames), bool(random_sampling), shortest_edge=edge)
        if decoded.truncated:
            logger.warning(decoded.truncation_message(path))
        if not by_rate:
            return decoded.frames, decoded.metadata
        metadata = dataclasses.replace(decoded.metadata, total_num_frames=len(decoded.frames))
        metadata.frames_indices = sample_indices_fn(metadata=metadata)
        return decoded.frames[metadata.frames_indices], metadata

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """As `BaseVideoProcessor.from_pretrained`; a HESP `config.json` beside it that disagrees on a shared setting
        (`num_frames`, `image_std`) is refused: the model owns them."""
        processor = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = saved_settings(pretrained_model_name_or_path, "config.json", **kwargs)
        check_saved_pair(pretrained_model_name_or_path, model, shared_settings(processor))
        return processor

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


def _as_rgb_uint8(video: Any) -> np.ndarray:
    """A decoded or given clip as `(T, H, W, 3)` uint8 RGB for the face detector (channels-first tensors and 0-1
    floats included; a grayscale clip repeated to three channels)."""
    array = video.numpy() if hasattr(video, "numpy") else np.asarray(video)
    if array.ndim == 3:
        array = array[..., None]
    if array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    if array.dtype != np.uint8:
        array = array * 255 if array.max() <= 1.0 else array
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


# The name before hesp-hf 0.2 (the library names these `<Processor>Kwargs`).
HESPVideosKwargs = HESPVideoProcessorKwargs

__all__ = ["HESPVideoProcessor", "VideoDecodeError", "segment_indices"]
