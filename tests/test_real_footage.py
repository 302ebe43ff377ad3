"""Files as phones, webcams, screen recorders and interrupted copies make them: rotation, variable frame rate, a late
first timestamp, truncation, corrupt bytes -- and the decoder never holding more than a few packets."""

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hesp_hf import HESPVideoProcessor, VideoDecodeError
from hesp_hf.data import (
    ClipTransform,
    TruncatedVideoError,
    clip_dataset,
    collate_clips,
    read_annotation,
    read_clip_log,
    sample_clip,
)
from hesp_hf.data.presets import PRESETS
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.modeling import video_decoding_hesp
from hesp_hf.modeling.video_decoding_hesp import decode_video, segment_positions


def numbered_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame i shows i in base 16 as two flat grey blocks in its top half (16 levels apart, so lossy coding cannot
    blur one number into the next) over a noisy bottom half (real-sized packets, as camera footage has)."""
    frames = np.random.default_rng(count).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    numbers = np.arange(count)
    frames[:, : height // 2, : width // 2] = (numbers // 16 * 16 + 8)[:, None, None, None]
    frames[:, : height // 2, width // 2 :] = (numbers % 16 * 16 + 8)[:, None, None, None]
    return frames


def frame_number(frames: np.ndarray) -> list[int]:
    height, width = frames.shape[1] // 2, frames.shape[2] // 2
    high = frames[:, 4 : height - 4, 4 : width - 4].mean(axis=(1, 2, 3))
    low = frames[:, 4 : height - 4, width + 4 : -4].mean(axis=(1, 2, 3))
    return [int(h // 16 * 16 + lo // 16) for h, lo in zip(high, low, strict=True)]


def upright_pattern() -> np.ndarray:
    """A portrait (64 tall, 48 wide) picture that is different under every rotation and mirror."""
    pattern = np.full((64, 48, 3), 40, dtype=np.uint8)
    pattern[:16, :16] = 230  # bright top-left corner
    pattern[40:, 30:, 2] = 200  # blue lower-right block
    return pattern


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_phone_rotation_is_applied(tmp_path, container):
    upright = upright_pattern()
    stored = np.rot90(upright, k=-1)  # how the sensor wrote it: landscape, turned clockwise
    frames = np.repeat(stored[None], 4, axis=0)
    lossless = {"qp": "0"}
    path = tmp_path / f"portrait.{container}"
    if container == "mp4":  # the display matrix, as phones write it
        write_video(path, frames, pix_fmt="yuv444p", options=lossless, rotation=90)
    else:  # the legacy `rotate` tag (clockwise degrees)
        _write_with_rotate_tag(path, frames, clockwise=270)
    decoded = decode_video(path, 2)
    assert decoded.rotation == 90
    assert decoded.frames.shape == (2, 64, 48, 3)
    assert np.abs(decoded.frames[0].astype(int) - upright.astype(int)).mean() < 3
    processor = HESPVideoProcessor(size={"height": 64, "width": 48}, crop_size={"height": 64, "width": 48})
    pixels = processor(str(path), num_frames=2, do_normalize=False, return_tensors="pt")["pixel_values_videos"]
    assert pixels.shape == (1, 2, 3, 64, 48)
    assert pixels[0, 0, 0, :16, :16].mean() > 0.8 and pixels[0, 0, 0, -16:, -16:].mean() < 0.3  # bright corner up-left


def _write_with_rotate_tag(path, frames, clockwise):
    import av

    from hesp_hf.embedded.video_writer import converted_frame

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        stream.options = {"qp": "0", "threads": "1"}
        stream.metadata["rotate"] = str(clockwise)
        for index, array in enumerate(frames):
            frame = converted_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24"), "yuv444p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_variable_frame_rate_is_sampled_in_time(tmp_path):
    """3 s at 10 fps then 2 s at 30 fps: every sample is the frame on screen at its segment's time centre."""
    times = np.concatenate([np.arange(30) / 10, 3 + np.arange(60) / 30])
    path = write_video(tmp_path / "vfr.mp4", numbered_frames(90), fps=30, timestamps=times)
    decoded = decode_video(path, 8)
    centres = segment_positions(8) * 5.0
    expected = [int(np.searchsorted(times, c, side="right") - 1) for c in centres]
    assert frame_number(decoded.frames) == expected
    intervals = np.diff(np.append(times, 5.0))
    for stamp, centre, index in zip(decoded.timestamps, centres, expected, strict=True):
        assert centre - intervals[index] < stamp <= centre + 1e-6
    # Sampling by index would take 3 of the 8 from the first 60 % of the time; by time it is 5.
    assert sum(t < 3 for t in decoded.timestamps) == 5


def test_a_stream_that_starts_late_is_sampled_over_its_own_span(tmp_path):
    times = 1.5 + np.arange(40) / 20
    path = write_video(tmp_path / "late.mkv", numbered_frames(40), fps=20, timestamps=times)
    decoded = decode_video(path, 4)
    assert frame_number(decoded.frames) == [5, 15, 25, 35]  # centres of 2 s: 0.25, 0.75, 1.25, 1.75 s in
    np.testing.assert_allclose(decoded.timestamps, [0.25, 0.75, 1.25, 1.75], atol=1e-6)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv", "clip.webm"])
def test_a_cut_file_is_reported_and_sampled_over_what_exists(tmp_path, name, caplog):
    codec = "libvpx-vp9" if name.endswith("webm") else "libx264"
    options = {"movflags": "faststart"} if name.endswith("mp4") else None  # index first, as streaming sites do
    whole = write_video(tmp_path / name, numbered_frames(75), codec=codec, container_options=options)
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert not decode_video(whole, 8).truncated
    decoded = decode_video(cut, 8)
    assert decoded.truncated and decoded.declared_seconds == pytest.approx(3.0, abs=0.05)
    assert decoded.readable_seconds < 2.5
    assert max(decoded.timestamps) < decoded.readable_seconds  # samples spread over the part that exists
    assert "is truncated" in decoded.truncation_message(cut) and str(cut) in decoded.truncation_message(cut)
    processor = HESPVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with caplog.at_level(logging.WARNING):
        processor(str(cut), num_frames=4, return_tensors="pt")
    assert f"Video file {cut} is truncated" in caplog.text


def test_undecodable_files_say_what_is_wrong(tmp_path):
    whole = write_video(tmp_path / "whole.mp4", numbered_frames(20))  # index at the end
    cases = {
        "empty.mp4": (b"", "is empty"),
        "notes.mp4": (b"meeting notes, not a video\n" * 40, "is text, not a video container"),
        "noise.mp4": (np.random.default_rng(0).bytes(5000), "not a video container"),
        "cut.mp4": (whole.read_bytes()[: whole.stat().st_size // 2], r"index \('moov' box\) is missing or cut off"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VideoDecodeError, match=reason) as raised:
            decode_video(tmp_path / name, 4)
        assert str(tmp_path / name) in str(raised.value)


def test_the_decoder_holds_no_more_than_a_few_packets(tmp_path, monkeypatch):
    """Packets are fed and dropped: never more than two alive at once, for a file of 250 (counted by reference)."""
    import sys

    path = write_video(tmp_path / "long.mp4", numbered_frames(250), options={"g": "50"})
    yielded, most_alive = [], [0]
    original = video_decoding_hesp._packets

    def counting(container, stream):
        for packet in original(container, stream):
            # `yielded`, the loop variable and getrefcount's argument hold three references; more: someone kept it.
            alive = sum(sys.getrefcount(p) > 3 for p in yielded)
            most_alive[0] = max(most_alive[0], alive)
            yielded.append(packet)
            yield packet

    monkeypatch.setattr(video_decoding_hesp, "_packets", counting)
    decoded = decode_video(path, 8)
    assert frame_number(decoded.frames) == [int((k + 0.5) * 250 / 8) for k in range(8)]
    assert len(yielded) < 250 + 40  # streamed with seeks, not re-read from the start for every sample
    assert most_alive[0] <= 2


def test_mutated_files_give_frames_or_one_named_error(tmp_path):
    """Seeded one-mutation copies (byte flips, deleted / duplicated / zeroed chunks, truncation) of small valid
    files in five containers: each decodes or raises `VideoDecodeError` naming the file -- nothing else."""
    sources = [
        write_video(tmp_path / "a.mp4", numbered_frames(12, 32, 32)),
        write_video(tmp_path / "b.mp4", numbered_frames(12, 32, 32), container_options={"movflags": "faststart"}),
        write_video(tmp_path / "c.mkv", numbered_frames(12, 32, 32), codec="ffv1", pix_fmt="yuv420p"),
        write_video(tmp_path / "d.webm", numbered_frames(12, 32, 32), codec="libvpx-vp9"),
        write_video(tmp_path / "e.avi", numbered_frames(12, 32, 32), codec="mpeg4"),
    ]
    rng = np.random.default_rng(12)
    outcomes = {"frames": 0, "error": 0}
    for trial in range(300):
        data = bytearray(sources[trial % len(sources)].read_bytes())
        at = int(rng.integers(0, len(data)))
        length = int(rng.integers(1, 64))
        kind = trial // len(sources) % 5
        if kind == 0:
            data[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            del data[at : at + length]
        elif kind == 2:
            data[at:at] = data[at : at + length]
        elif kind == 3:
            data[at : at + length] = bytes(len(data[at : at + length]))
        else:
            del data[at:]
        path = tmp_path / f"mutant-{trial}{sources[trial % len(sources)].suffix}"
        path.write_bytes(bytes(data))
        try:
            decoded = decode_video(path, 4)
            assert decoded.frames.shape[0] == 4 and decoded.frames.dtype == np.uint8
            outcomes["frames"] += 1
        except VideoDecodeError as error:
            assert str(path) in str(error)
            outcomes["error"] += 1
        path.unlink()
    assert outcomes["frames"] > 50 and outcomes["error"] > 5  # the mutations hit both ways


def test_skip_counts_distinct_clips_per_split_and_survives_an_all_bad_batch(tmp_path, tiny_clip_dir):
    write_video(tmp_path / "good.mp4", numbered_frames(10, 32, 32))
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    faststart = write_video(
        tmp_path / "long.mp4", numbered_frames(75, 32, 32), container_options={"movflags": "faststart"}
    )
    (tmp_path / "cut.mp4").write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    names = ["bad.mp4", "bad2.mp4", "good.mp4", "cut.mp4"]
    (tmp_path / "bad2.mp4").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "list.csv").write_text("video_path,label\n" + "".join(f"{n},{i}\n" for i, n in enumerate(names)))
    records = read_annotation(tmp_path / "list.csv", PRESETS["mafw"])
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    log = tmp_path / "out" / "clip_report.tsv"

    def transform(split, **policies):
        return ClipTransform(processor, training=split == "train", clip_log=log, split=split, **policies)

    train = clip_dataset(records, transform("train", on_bad_clip="skip"))
    for _epoch in range(3):  # the same bad clips every epoch: counted once
        batches = list(DataLoader(train, batch_size=2, num_workers=1, collate_fn=collate_clips))
        assert batches[0]["labels"].numel() == 0 and batches[0]["pixel_values_videos"].numel() == 0
        assert batches[1]["labels"].tolist() == [records[2].label, records[3].label]  # the cut clip is used
    test = clip_dataset(records, transform("test", on_bad_clip="skip", on_truncated_clip="skip"))
    assert sum(len(b["labels"]) for b in DataLoader(test, batch_size=4, collate_fn=collate_clips)) == 1
    report = read_clip_log(log)
    assert report.counts(("train", "validation", "test")) == {
        "skipped_clips": {"train": 2, "validation": 0, "test": 3},
        "truncated_clips": {"train": 1, "validation": 0, "test": 0},
    }
    assert sorted(report.skipped["test"]) == sorted(str(tmp_path / n) for n in ("bad.mp4", "bad2.mp4", "cut.mp4"))
    strict = clip_dataset(records, transform("test", on_bad_clip="skip", on_truncated_clip="raise"))
    with pytest.raises(TruncatedVideoError, match="cut.mp4"):
        strict[3]
    assert sample_clip(tmp_path / "cut.mp4", 4).truncated


def test_trainer_steps_over_an_empty_batch(tiny_clip_dir, tmp_path):
    """A batch whose clips were all skipped trains nothing and predicts nothing, without an error."""
    from transformers import TrainingArguments

    from hesp_hf import HESPForOpenSetVideoClassification
    from hesp_hf.training import HESPTrainer

    model = HESPForOpenSetVideoClassification.from_clip(str(tiny_clip_dir), labels=["a", "b"])
    trainer = HESPTrainer(
        model=model,
        args=TrainingArguments(str(tmp_path), report_to="none", use_cpu=True, remove_unused_columns=False),
        data_collator=collate_clips,
    )
    empty = collate_clips([{"pixel_values_videos": None, "labels": 0}])
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    loss = trainer.compute_loss(model, empty)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters() if p.requires_grad)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)
    model.eval()
    loss, logits, labels = trainer.prediction_step(model, empty, prediction_loss_only=False)
    assert loss is None and labels.shape == (0,)
    assert {"logits", "open_set_score", "clip_logits"} <= logits.keys()
    assert all(value.shape[0] == 0 for value in logits.values())


def test_when_seeking_fails_one_pass_gives_the_same_frames(tmp_path, monkeypatch):
    times = np.concatenate([np.arange(30) / 10, 3 + np.arange(60) / 30])  # variable frame rate
    path = write_video(tmp_path / "vfr.mp4", numbered_frames(90), fps=30, timestamps=times)
    seeking = decode_video(path, 8)
    original = video_decoding_hesp._frames_at

    def broken_seeking(*args, allow_seek, **kwargs):
        if allow_seek:
            raise video_decoding_hesp._SeekingUnusable("seeking lands in the wrong place")
        return original(*args, allow_seek=allow_seek, **kwargs)

    monkeypatch.setattr(video_decoding_hesp, "_frames_at", broken_seeking)
    one_pass = decode_video(path, 8)
    assert frame_number(one_pass.frames) == frame_number(seeking.frames)
    assert one_pass.timestamps == seeking.timestamps
