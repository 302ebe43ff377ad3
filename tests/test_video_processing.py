"""HESPVideoProcessor: sampling, shapes for awkward inputs, PyAV decoding, clear errors for undecodable files."""

import numpy as np
import pytest
import torch

from hesp_hf import HESPVideoProcessor, VideoDecodeError
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.modeling.video_processing_hesp import segment_indices

from .conftest import random_video


@pytest.fixture
def processor(tiny_clip_dir):
    return HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)


def test_from_clip_reads_the_vision_size(processor):
    assert processor.crop_size.height == processor.crop_size.width == 32
    assert processor.size.shortest_edge == 32
    assert processor.num_frames == 4
    assert processor.image_mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])


def test_from_clip_prefers_the_image_processor_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        '{"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 48, "width": 48},'
        ' "size": {"shortest_edge": 50}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}'
    )
    processor = HESPVideoProcessor.from_clip(str(tmp_path), num_frames=3)
    out = processor(random_video(frames=5, height=60, width=70), return_tensors="pt")
    assert out["pixel_values_videos"].shape == (1, 3, 3, 48, 48)
    assert list(processor.image_std) == [0.25, 0.25, 0.25]


def test_segment_indices_are_the_frames_on_screen_at_segment_centres():
    # 16 frames of unit length in 4 segments [0,4) [4,8) [8,12) [12,16): centres at t = 2, 6, 10, 14.
    assert segment_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert segment_indices(10, 4).tolist() == [1, 3, 6, 8]  # centres 1.25, 3.75, 6.25, 8.75
    # A short clip shows each frame for its share of the time: centres 0.19, 0.56, .., 2.81 of 3 frames.
    assert segment_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert segment_indices(1, 4).tolist() == [0, 0, 0, 0]
    generator = torch.Generator().manual_seed(0)
    draws = np.stack([segment_indices(16, 4, True, generator) for _ in range(400)])
    for segment in range(4):
        assert set(draws[:, segment].tolist()) == set(range(4 * segment, 4 * segment + 4))
    with pytest.raises(ValueError, match="at least one frame"):
        segment_indices(0, 4)


@pytest.mark.parametrize("frames", [1, 3, 9])
def test_short_and_long_arrays_give_num_frames(processor, frames):
    video = random_video(frames=frames, height=37, width=51)  # odd sizes
    out = processor(video, return_tensors="pt")["pixel_values_videos"]
    assert out.shape == (1, 4, 3, 32, 32)
    if frames == 1:
        assert torch.equal(out[0, 0], out[0, 3])  # the one frame, all the time


def test_sampled_frames_are_the_segment_centres(processor):
    video = np.zeros((16, 32, 32, 3), dtype=np.uint8)
    video[:, 0, 0, 0] = np.arange(16) * 10  # frame index written into one pixel
    out = processor(video, return_tensors="pt", do_normalize=False, do_resize=False, do_center_crop=False)
    picked = (out["pixel_values_videos"][0, :, 0, 0, 0] * 255).round().long().tolist()
    assert picked == [20, 60, 100, 140]


def test_grayscale_array(processor):
    gray = random_video(frames=2)[..., :1]  # (T, H, W, 1)
    out = processor(gray, return_tensors="pt")["pixel_values_videos"]
    assert out.shape == (1, 4, 3, 32, 32)


@pytest.mark.parametrize(
    ("name", "shape", "codec", "pix_fmt"),
    [
        ("h264.mp4", (3, 40, 48, 3), "libx264", "yuv420p"),
        ("one-frame.mp4", (1, 40, 48, 3), "libx264", "yuv420p"),
        ("odd.mkv", (5, 33, 47, 3), "ffv1", "yuv444p"),
        ("gray.mkv", (3, 30, 40), "ffv1", "gray"),
        ("ten-bit.mkv", (3, 30, 40, 3), "ffv1", "yuv420p10le"),
        ("ten-bit-h264.mp4", (3, 30, 40, 3), "libx264", "yuv420p10le"),
        ("mpeg4.avi", (6, 30, 40, 3), "mpeg4", "yuv420p"),
    ],
)
def test_files_decode_to_the_right_shape(processor, tmp_path, name, shape, codec, pix_fmt):
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = write_video(tmp_path / name, frames, codec=codec, pix_fmt=pix_fmt)
    out = processor(str(path), return_tensors="pt")["pixel_values_videos"]
    assert out.shape == (1, 4, 3, 32, 32)
    assert torch.isfinite(out).all()


def test_lossless_file_round_trip(processor, tmp_path):
    """A lossless file gives the same pixel values as the array it was written from."""
    video = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    path = write_video(tmp_path / "lossless.mkv", video, codec="ffv1", pix_fmt="bgr0")
    from_file = processor(str(path), return_tensors="pt")["pixel_values_videos"]
    from_array = processor(video, return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(from_file, from_array)


def test_batch_of_files(processor, tmp_path):
    paths = [
        str(write_video(tmp_path / f"{i}.mp4", random_video(frames=2 + i, height=40, width=40))) for i in range(3)
    ]
    out = processor(paths, return_tensors="pt")["pixel_values_videos"]
    assert out.shape == (3, 4, 3, 32, 32)


def test_undecodable_files_raise_a_clear_error(processor, tmp_path, sample_clip):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(sample_clip.read_bytes()[: sample_clip.stat().st_size // 3])
    audio = tmp_path / "audio.wav"
    _write_audio(audio)
    for path in (empty, text, truncated, audio):
        with pytest.raises(VideoDecodeError, match=str(path.name)):
            processor(str(path), return_tensors="pt")
    with pytest.raises(VideoDecodeError, match="no video stream"):
        processor(str(audio), return_tensors="pt")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        processor(str(tmp_path / "missing.mp4"), return_tensors="pt")


def test_random_sampling_for_training(tiny_clip_dir):
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4, random_sampling=True)
    video = np.zeros((40, 32, 32, 3), dtype=np.uint8)
    video[:, 0, 0, 0] = np.arange(40) * 6
    seen = set()
    for _ in range(20):
        out = processor(video, return_tensors="pt", do_normalize=False, do_resize=False, do_center_crop=False)
        seen.add(tuple((out["pixel_values_videos"][0, :, 0, 0, 0] * 255 / 6).round().long().tolist()))
    assert len(seen) > 1
    assert all(10 * s <= i < 10 * (s + 1) for draw in seen for s, i in enumerate(draw))


def _write_audio(path):
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_model_and_processor_are_built_and_checked_as_a_pair(tiny_clip_dir, tmp_path):
    """The processor's std scales the visual prompt (not CLIP's default); a saved pair that disagrees is refused."""
    import shutil

    from hesp_hf import HESPForOpenSetVideoClassification, check_pair, model_and_processor_from_clip

    clip = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, clip)
    (clip / "preprocessor_config.json").write_text(
        '{"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 32, "width": 32},'
        ' "size": {"shortest_edge": 32}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.2, 0.3]}'
    )
    model, processor = model_and_processor_from_clip(str(clip), ["a", "b"], num_frames=3)
    assert model.config.image_std == [0.25, 0.2, 0.3] and model.config.num_frames == processor.num_frames == 3
    delta = model.visual_prompt.scaled_delta(torch.zeros(1)) * torch.tensor([0.25, 0.2, 0.3])[:, None, None]
    torch.testing.assert_close(delta, model.visual_prompt.delta.detach())  # prompt / std, the processor's std
    other = HESPForOpenSetVideoClassification.from_clip(str(clip), ["a", "b"], num_frames=5)
    expected = (
        r"the pair passed: the model and its video processor disagree -- num_frames: config.json says 5, "
        r"video_preprocessor_config.json says 3; image_std: .*The model's config owns them"
    )
    with pytest.raises(ValueError, match=expected):
        check_pair(other.config, processor)


def test_sample_frames_with_fps_takes_the_rate_of_the_clip(processor):
    """`fps` with the video's metadata: as many frames as that rate gives over the clip (8 frames at 4 fps last 2 s:
    3 fps gives 6), by segment sampling; `num_frames` and `fps` are exclusive."""
    from transformers.video_utils import VideoMetadata

    metadata = VideoMetadata(total_num_frames=8, fps=4, duration=2.0)
    assert processor.sample_frames(metadata, fps=3).tolist() == segment_indices(8, 6).tolist()
    assert len(processor.sample_frames(metadata, fps=0.1)) == 1  # a short clip still gives a frame
    with pytest.raises(ValueError, match=r"num_frames or fps, not both: got num_frames=3, fps=3"):
        processor.sample_frames(metadata, num_frames=3, fps=3)
    with pytest.raises(ValueError, match=r"fps=3 needs the video's frame rate"):
        processor.sample_frames(VideoMetadata(total_num_frames=8), fps=3)
    with pytest.raises(ValueError, match=r"fps must be a positive number .* got -1"):
        processor.sample_frames(metadata, fps=-1)


def test_processor_call_with_fps_overrides_its_saved_num_frames(processor, sample_clip):
    """`fps` in the call samples by rate although the processor saves `num_frames=4`; for arrays the rate comes from
    `video_metadata`, for files from the file itself (6 frames at 25 fps: 50 fps asks for 12, repeating frames)."""
    video = random_video(frames=8)
    metadata = [{"total_num_frames": 8, "fps": 4, "duration": 2.0}]
    out = processor(video, fps=3, video_metadata=metadata, return_tensors="pt")["pixel_values_videos"]
    assert out.shape[1] == 6
    assert processor(video, return_tensors="pt")["pixel_values_videos"].shape[1] == 4  # the saved count otherwise
    with pytest.raises(ValueError, match="not both"):
        processor(video, num_frames=3, fps=3, video_metadata=metadata, return_tensors="pt")
    from_file = processor(str(sample_clip), fps=50, return_tensors="pt")["pixel_values_videos"]
    assert from_file.shape[1] == 12
    every = processor(str(sample_clip), fps=25, return_tensors="pt")["pixel_values_videos"]
    assert every.shape[1] == 6
    torch.testing.assert_close(
        every[0], processor(str(sample_clip), num_frames=6, return_tensors="pt")["pixel_values_videos"][0]
    )
