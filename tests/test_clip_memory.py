"""Memory bounded by the model's input on the clip path: a file's sampled frames are converted straight to the size
the next step needs (the model's input, what face cropping needs, what a training crop needs), never to full-size
RGB first; the result differs from the full-size path by interpolation only."""

import numpy as np
import pytest
import torch

from hesp_hf import HESPVideoProcessor
from hesp_hf.data import ClipAugmentation, ClipTransform
from hesp_hf.data.decoding import sample_clip
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.modeling import video_decoding_hesp
from hesp_hf.modeling.video_decoding_hesp import decode_video
from hesp_hf.modeling.video_processing_hesp import FACE_CROP_SHORTEST_EDGE


def smooth_video(frames: int, height: int, width: int) -> np.ndarray:
    """Gradients and a block: content that survives any downscale, so the two paths can be compared pixel by pixel."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    video = np.repeat(base[None].astype(np.uint8), frames, axis=0)
    for t in range(frames):
        video[t, height // 4 : height // 2, width // 8 + t * 4 : width // 3 + t * 4] = (200, 40, 90)
    return video


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("wide") / "wide.mp4", smooth_video(8, 240, 400), fps=8)


def test_frames_come_out_at_the_shortest_edge_and_are_never_enlarged(wide_clip, monkeypatch):
    conversions = []
    real = video_decoding_hesp.rgb_frame

    def recording(frame, shortest_edge=None):
        array = real(frame, shortest_edge)
        conversions.append(((frame.height, frame.width), array.shape[:2]))
        return array

    monkeypatch.setattr(video_decoding_hesp, "rgb_frame", recording)
    small = decode_video(wide_clip, 4, shortest_edge=48)
    assert small.frames.shape == (4, 48, 80, 3)  # 240x400 -> 48x80, the aspect kept
    assert conversions == [((240, 400), (48, 80))] * 4  # each frame converted once, straight to the small size
    assert (small.metadata.height, small.metadata.width) == (48, 80)
    assert decode_video(wide_clip, 4, shortest_edge=1000).frames.shape == (4, 240, 400, 3)  # not enlarged
    full = decode_video(wide_clip, 4).frames
    # Area averaging: every 5x5 block of the full frame becomes one pixel (240 / 48 = 5): its mean, within rounding
    # and the codec's chroma subsampling.
    blocks = full.reshape(4, 48, 5, 80, 5, 3).mean(axis=(2, 4))
    assert np.abs(small.frames.astype(float) - blocks).mean() < 2.0


def test_the_processor_decodes_a_file_at_the_size_its_resize_needs(wide_clip):
    processor = HESPVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, num_frames=4)
    assert processor.decode_edge() == 32 and processor.decode_edge(face_crop=True) == FACE_CROP_SHORTEST_EDGE
    got = processor(str(wide_clip), return_tensors="pt")["pixel_values_videos"]
    at_edge = decode_video(wide_clip, 4, shortest_edge=32).frames
    expected = processor(torch.from_numpy(at_edge).permute(0, 3, 1, 2), do_sample_frames=False, return_tensors="pt")
    torch.testing.assert_close(got, expected["pixel_values_videos"])
    # The full-size path it replaced differs by interpolation only (bicubic resize against area averaging).
    full = decode_video(wide_clip, 4).frames
    before = processor(torch.from_numpy(full).permute(0, 3, 1, 2), do_sample_frames=False, return_tensors="pt")
    difference = (got - before["pixel_values_videos"]).abs()
    assert got.shape == before["pixel_values_videos"].shape and float(difference.mean()) < 0.05
    assert HESPVideoProcessor(do_resize=False).decode_edge() is None  # no resize: frames as stored


def test_the_data_path_decodes_for_what_follows(wide_clip, tmp_path):
    processor = HESPVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, num_frames=4)
    assert ClipTransform(processor, training=False).decode_edge == 32
    flips = ClipAugmentation(size=(32, 32), scale=(1.0, 1.0))
    assert ClipTransform(processor, training=True, augmentation=flips).decode_edge == 32
    crops = ClipAugmentation(size=(32, 32), scale=(0.25, 1.0))  # the smallest crop spans half of each side
    assert ClipTransform(processor, training=True, augmentation=crops).decode_edge == 64
    processor.face_crop = True
    assert ClipTransform(processor, training=True, augmentation=crops).decode_edge == FACE_CROP_SHORTEST_EDGE
    processor.face_crop = False
    frames = sample_clip(wide_clip, 4, shortest_edge=ClipTransform(processor, training=False).decode_edge).frames
    assert frames.shape == (4, 32, 53, 3)
