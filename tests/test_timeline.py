"""Timelines of long recordings: the streamed frame grid, windows that share frames yet equal the model on the same
frames, segments that tile the recording, damage and face-less stretches marked, the files, the command, and the
accuracy against a stitched recording whose truth is known."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hesp_hf import HESPVideoProcessor, VideoDecodeError
from hesp_hf.data.frame_stream import FrameStream
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.evaluation.timeline_accuracy import timeline_accuracy
from hesp_hf.inference.timeline import NO_FACE, UNREADABLE, TimelineWindow, frames_per_window_step, merge_segments
from hesp_hf.inference.timeline import timeline as make_timeline
from hesp_hf.inference.timeline_outputs import finished, write_timeline
from hesp_hf.modeling.video_decoding_hesp import decode_video

from .conftest import frozen_prototype_model, random_video


def noise_video(path: Path, seconds: float, fps: int = 8, keyframe_every: int = 8, **options) -> Path:
    """Noise frames (each about as many bytes as the next, so a share of the file is a share of the time), short
    side at the tiny model's input size so that no scaling separates the timeline from the clip path."""
    frames = random_video(frames=int(seconds * fps), height=32, width=40, seed=3)  # short side: the model size
    return write_video(
        path, frames, fps=fps, options={"g": str(keyframe_every)}, container_options={"movflags": "faststart"}
    )


def frame_at(timestamps: list[float], moment: float) -> int:
    """The frame on screen at `moment`: the last whose timestamp is at or before it (the reference of the tests)."""
    return max(i for i, t in enumerate(timestamps) if t <= moment + 1e-9)


@pytest.fixture
def processor(tiny_clip_dir):
    return HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)


# ------------------------------------------------------------------------------------------------ the stream
def test_the_stream_shows_the_frame_on_screen_at_each_moment_of_a_variable_frame_rate_video(tmp_path):
    stamps = np.array([0.0, 0.1, 0.35, 0.4, 1.0, 1.05, 1.6, 2.3, 2.4, 2.45, 3.1])
    levels = (np.arange(len(stamps)) * 22 + 10).astype(np.uint8)
    frames = np.repeat(levels[:, None, None, None], 40 * 48 * 3).reshape(len(stamps), 40, 48, 3)
    path = write_video(tmp_path / "vfr.mp4", frames, timestamps=stamps, options={"qp": "0"})
    stream = FrameStream(path, rate=4)
    moments = list(stream)
    # Moments (k + 0.5) / 4 s until the end of the last frame (its duration: the stream's nominal frame interval).
    assert [m.index for m in moments] == list(range(len(moments)))
    np.testing.assert_allclose([m.time for m in moments], (np.arange(len(moments)) + 0.5) / 4)
    assert moments[-1].time < stream.duration <= moments[-1].time + 0.25 + 1e-9
    assert stream.duration > stamps[-1]
    for moment in moments:
        expected = levels[frame_at(list(stamps), moment.time)]
        assert abs(float(moment.image.mean()) - float(expected)) < 4, moment.time
    assert stream.gaps == [] and stream.decode_errors == 0


def test_the_stream_scales_frames_while_converting_them(tmp_path):
    path = write_video(tmp_path / "wide.mp4", random_video(frames=8, height=60, width=100))
    images = [m.image for m in FrameStream(path, rate=4, shortest_edge=30)]
    assert {image.shape for image in images} == {(30, 50, 3)}


# ------------------------------------------------------------------------------------ windows and decisions
@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the ensemble head, the visual prompt at one centre
        {"inference_logits": "prototypes", "prototype_space": "frozen", "visual_prompt_location": "per_frame"},
    ],
    ids=["ensemble-head", "frozen-prototypes-per-frame-prompt"],
)
def test_windows_share_frames_yet_equal_the_model_on_the_same_frames(tmp_path, make_model, processor, overrides):
    model = make_model().eval()
    for key, value in overrides.items():
        setattr(model.config, key, value)
    if overrides:
        torch.manual_seed(1)
        model.set_class_prototypes(torch.randn(6, model.config.projection_dim), torch.tensor([0, 0, 1, 1, 2, 2]))
        assert model.needs_frozen_frames()
    model.config.unknown_threshold = 0.0
    path = noise_video(tmp_path / "long.mp4", seconds=3.0)
    window, stride = 1.0, 0.25  # 4 frames a second: one frame per stride
    result = make_timeline(model, processor, path, window=window, stride=stride, batch_size=5)
    decoded = decode_video(path)  # every frame, with its timestamp
    starts = np.arange(len(result.windows)) * stride
    assert len(result.windows) == int((3.0 - window) / stride) + 1
    for window_result, start in zip(result.windows, starts, strict=True):
        moments = start + (np.arange(4) + 0.5) / 4
        frames = decoded.frames[[frame_at(decoded.timestamps, m) for m in moments]]
        pixels = processor(torch.from_numpy(frames).permute(0, 3, 1, 2), do_sample_frames=False, return_tensors="pt")
        with torch.no_grad():
            reference = model(pixel_values_videos=pixels["pixel_values_videos"])
        probabilities = reference.logits[0, :3].softmax(-1)
        assert window_result.start == pytest.approx(start) and window_result.end == pytest.approx(start + window)
        assert window_result.score == pytest.approx(float(reference.open_set_score[0]), abs=1e-4)
        np.testing.assert_allclose(list(window_result.probabilities.values()), probabilities.numpy(), atol=1e-4)
        assert window_result.label == model.config.id2label[int(reference.logits[0].argmax())]


def test_stride_is_whole_sampled_frames_and_a_short_video_is_one_window(tmp_path, make_model, processor, caplog):
    assert frames_per_window_step(2.0, 0.5, 8) == (4.0, 2)
    with caplog.at_level(logging.WARNING):
        assert frames_per_window_step(1.0, 0.3, 4) == (4.0, 1)
    assert "0.25 s is used" in caplog.text
    with pytest.raises(ValueError, match="window must be a finite number of seconds from 0.0667 to 86400"):
        frames_per_window_step(0.0, 0.5, 8)

    model = make_model().eval()
    path = write_video(tmp_path / "short.mp4", random_video(frames=6, height=40, width=48), fps=12)  # 0.5 s
    result = make_timeline(model, processor, path, window=2.0, stride=0.5)
    assert len(result.windows) == 1 and len(result.segments) == 1
    only = result.windows[0]
    assert (only.start, only.end) == (0.0, pytest.approx(0.5))
    with torch.no_grad():  # the clip path: the processor samples the whole file
        reference = model(**processor([str(path)], return_tensors="pt"))
    np.testing.assert_allclose(list(only.probabilities.values()), reference.logits[0, :3].softmax(-1), atol=1e-4)


@pytest.mark.parametrize(
    ("window", "stride", "wrong"),
    [
        (float("inf"), 0.5, "window must be a finite number of seconds from 0.0667 to 86400 .* got inf"),
        (float("nan"), 0.5, "window must .* got nan"),
        (1e-9, 0.5, r"window must .* \(the model's 8 frames at up to 120 frames a second\), got 1e-09"),
        (0.06, 0.5, "window must .* got 0.06"),  # 8 frames in 0.06 s: 133 frames a second
        (1e6, 0.5, "window must .* got 1000000.0"),
        (2.0, float("inf"), "stride must be a finite number of seconds > 0 and up to 86400, got inf"),
        (2.0, -0.5, "stride must .* got -0.5"),
    ],
)
def test_window_and_stride_out_of_range_are_one_clear_error(window, stride, wrong):
    with pytest.raises(ValueError, match=wrong) as error:
        frames_per_window_step(window, stride, 8)
    assert "\n" not in str(error.value)


def test_the_shortest_window_samples_its_frames_at_120_a_second():
    rate, steps = frames_per_window_step(8 / 120, 1e-9, 8)  # the stride rounds up to one frame step
    assert rate == pytest.approx(120.0) and steps == 1


def test_segments_tile_the_recording_by_window_centres():
    decisions = ["a", "a", "b", "b", "b", "unknown"]
    windows = [
        TimelineWindow(start=0.5 * i, end=0.5 * i + 2.0, label=d, known=d != "unknown", score=float(i))
        for i, d in enumerate(decisions)
    ]
    segments = merge_segments(windows, stride=0.5, duration=4.6)
    # Centres 1.0 ... 3.5; each window stands for its centre +- 0.25, the first from 0, the last to the end.
    assert [(s.start, s.end, s.decision, s.windows) for s in segments] == [
        (0.0, 1.75, "a", 2),
        (1.75, 3.25, "b", 3),
        (3.25, 4.6, "unknown", 1),
    ]
    assert segments[1].mean_score == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------- bad input
def test_damage_in_the_middle_keeps_the_windows_around_it_and_marks_the_gap(tmp_path, make_model, processor):
    path = noise_video(tmp_path / "whole.mp4", seconds=10.0)
    data = bytearray(path.read_bytes())
    lo, hi = int(len(data) * 0.45), int(len(data) * 0.55)
    data[lo:hi] = bytes(hi - lo)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    result = make_timeline(make_model().eval(), processor, damaged, window=1.0, stride=0.5)
    assert len(result.gaps) == 1 and result.decode_errors > 0
    gap = result.gaps[0]
    assert 2.0 < gap.start < gap.end < 8.0
    assert result.duration == pytest.approx(10.0, abs=0.2)
    for window in result.windows:
        moments = window.start + (np.arange(4) + 0.5) / 4  # the sampled frames' moments
        lost = bool(((moments >= gap.start) & (moments < gap.end)).any())
        assert window.status == (UNREADABLE if lost else "ok"), (window.start, gap)
    assert any(w.status == "ok" and w.start >= gap.end for w in result.windows)  # the part after the damage
    assert UNREADABLE in [s.decision for s in result.segments]


def test_a_file_cut_short_keeps_what_reads_and_marks_the_rest(tmp_path, make_model, processor):
    data = noise_video(tmp_path / "whole.mp4", seconds=6.0).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    result = make_timeline(make_model().eval(), processor, cut, window=1.0, stride=0.5)
    assert [g.reason for g in result.gaps] == ["the file is cut short"]
    assert result.gaps[0].end == pytest.approx(6.0, abs=0.2) and 2.0 < result.gaps[0].start < 4.0
    assert result.windows[0].status == "ok" and result.windows[-1].status == UNREADABLE
    assert result.segments[-1].decision == UNREADABLE and result.segments[-1].end == pytest.approx(6.0, abs=0.2)


def test_text_and_audio_only_files_are_one_clear_error(tmp_path, make_model, processor):
    import av

    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(VideoDecodeError, match="notes.mp4 is text"):
        make_timeline(make_model().eval(), processor, text)
    audio = tmp_path / "voice.mka"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("mp2", rate=16000, layout="mono")
        samples = (np.sin(np.arange(16000) / 10) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match=r"voice.mka has no video stream: audio only"):
        list(FrameStream(audio, rate=4))


def test_a_stretch_without_a_face_is_marked_not_labelled(tmp_path, make_model, processor):
    pytest.importorskip("cv2")
    from .test_face_cropping import astronaut_clip, cluttered_background

    faces, _, _ = astronaut_clip(count=8, covered=())
    empty = np.repeat(cluttered_background(360, 640, 1)[None], 8, axis=0).clip(0, 255).astype(np.uint8)
    path = write_video(tmp_path / "scene.mp4", np.concatenate([faces, empty]), fps=4)  # 2 s face, 2 s none
    result = make_timeline(make_model().eval(), processor, path, window=1.0, stride=0.5, face_crop=True)
    by_start = {w.start: w for w in result.windows}
    assert all(by_start[s].status == "ok" and by_start[s].face_box is not None for s in (0.0, 0.5, 1.0))
    assert all(by_start[s].status == NO_FACE for s in (2.0, 2.5, 3.0))
    assert result.segments[-1].decision == NO_FACE
    x0, y0, x1, y1 = by_start[0.0].face_box
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360 and x1 - x0 == pytest.approx(y1 - y0, abs=1)


# ----------------------------------------------------------------------------------- files and the command
def saved_checkpoint(model, processor, folder: Path) -> Path:
    model.config.unknown_threshold = 0.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_files_are_complete_and_captions_follow_the_segments(tmp_path, make_model, processor):
    model = make_model().eval()
    result = make_timeline(model, processor, noise_video(tmp_path / "a.mp4", seconds=3.0), window=1.0, stride=0.25)
    summary = write_timeline(result, tmp_path / "out", "a", settings={"k": 1})
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(summary["files"] + ["summary.json"])
    windows = [json.loads(line) for line in (out / "windows.jsonl").read_text().splitlines()]
    assert len(windows) == len(result.windows) == len((out / "windows.csv").read_text().splitlines()) - 1
    assert set(windows[0]["probabilities"]) == set(model.config.known_labels)
    vtt = (out / "a.vtt").read_text().split("\n\n")
    assert vtt[0] == "WEBVTT"
    cues = [block.splitlines() for block in vtt[1:] if block.strip()]
    assert len(cues) == len(result.segments)

    def seconds(stamp: str) -> float:
        hours, minutes, rest = stamp.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(rest)

    spans = [tuple(seconds(part) for part in cue[1].split(" --> ")) for cue in cues]
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(result.duration, abs=1e-3)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert finished(out, {"k": 1}) and not finished(out, {"k": 2})
    (out / "segments.csv").unlink()
    assert not finished(out, {"k": 1})


def run_cli(monkeypatch, *argv: str) -> None:
    from hesp_hf.commands import timeline as command

    monkeypatch.setattr(sys, "argv", ["hesp-timeline", *argv])
    command.cli()


def test_the_command_skips_broken_files_resumes_and_fails_when_nothing_reads(
    tmp_path, make_model, processor, monkeypatch, caplog
):
    checkpoint = saved_checkpoint(make_model(), processor, tmp_path / "model")
    good = noise_video(tmp_path / "videos" / "good.mp4", seconds=2.0)
    broken = tmp_path / "videos" / "broken.mp4"
    broken.write_text("no video here\n")
    out = tmp_path / "out"
    options = ["--checkpoint", str(checkpoint), "--output", str(out), "--window_s", "1", "--no_progress"]
    with caplog.at_level(logging.INFO):
        run_cli(monkeypatch, *options, str(tmp_path / "videos"))
    assert (out / "good" / "summary.json").is_file() and not (out / "broken").exists()
    assert "broken.mp4: skipped: File" in caplog.text and "is text" in caplog.text
    written = (out / "good" / "windows.jsonl").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_cli(monkeypatch, *options, str(good))
    assert "finished earlier" in caplog.text
    assert (out / "good" / "windows.jsonl").stat().st_mtime_ns == written
    with pytest.raises(SystemExit) as exit_info:
        run_cli(monkeypatch, *options, str(broken))
    assert exit_info.value.code == 2


def test_folder_names_are_unique_and_keep_each_stem_where_they_can():
    from hesp_hf.commands.timeline import output_names

    # The old names gave tb/x.mp4 and tc/x-2.mp4 both `x-2`: one timeline replaced the other.
    assert output_names(["ta/x.mp4", "tb/x.mp4", "tc/x-2.mp4"]) == ["x", "x-3", "x-2"]
    assert output_names(["a/x.mp4", "b/x.mp4", "c/x.mp4"]) == ["x", "x-2", "x-3"]
    assert output_names(["a/x.mp4", "b/x.mp4"], taken={"x", "x-2"}) == ["x-3", "x-4"]
    assert output_names(["a/x.mp4", "b/x.mp4"], kept={"b/x.mp4": "x"}) == ["x-2", "x"]


def test_a_folder_that_holds_something_else_goes_to_no_other_recording(tmp_path):
    from hesp_hf.commands.timeline import folder_names

    out = tmp_path / "out"
    videos = [str(tmp_path / folder / name) for folder, name in (("a", "x.mp4"), ("b", "y.mp4"), ("c", "z.mp4"))]
    (out / "x").mkdir(parents=True)  # another recording's timeline
    (out / "x" / "summary.json").write_text(json.dumps({"settings": {"video": str(tmp_path / "elsewhere/x.mp4")}}))
    (out / "y").mkdir()  # a run stopped before its summary: made again in place
    (out / "y" / "windows.jsonl").write_text("{}\n")
    (out / "y" / "y.vtt").write_text("WEBVTT\n")
    (out / "z").mkdir()  # the user's own files
    (out / "z" / "notes.txt").write_text("mine\n")
    (out / "z-2").mkdir()  # this very recording's earlier timeline: resumed there
    (out / "z-2" / "summary.json").write_text(json.dumps({"settings": {"video": videos[2]}}))
    assert folder_names(out, videos) == ["x-2", "y", "z-2"]


def test_the_command_gives_every_recording_its_own_folder_within_and_across_runs(
    tmp_path, make_model, processor, monkeypatch, caplog
):
    checkpoint = saved_checkpoint(make_model(), processor, tmp_path / "model")
    first = noise_video(tmp_path / "ta" / "x.mp4", seconds=1.0)
    second = write_video(tmp_path / "tb" / "x.mp4", random_video(frames=8, height=32, width=40, seed=5), fps=8)
    third = write_video(tmp_path / "tc" / "x-2.mp4", random_video(frames=8, height=32, width=40, seed=6), fps=8)

    def run(out: Path, *videos: Path) -> None:
        options = ["--checkpoint", str(checkpoint), "--output", str(out), "--window_s", "1", "--no_progress"]
        run_cli(monkeypatch, *options, *map(str, videos))

    def sources(out: Path) -> dict[str, str]:
        return {f.name: json.loads((f / "summary.json").read_text())["settings"]["video"] for f in out.iterdir()}

    run(tmp_path / "one", first, second, third)  # within one run
    assert sorted(sources(tmp_path / "one").values()) == sorted(str(v.resolve()) for v in (first, second, third))
    assert sources(tmp_path / "one")["x-2"] == str(third.resolve())

    out = tmp_path / "two"  # across runs: the second x.mp4 leaves the first one's timeline as it was
    run(out, first)
    kept = {f.name: f.read_bytes() for f in (out / "x").iterdir()}
    with caplog.at_level(logging.INFO):
        run(out, second)
    assert {f.name: f.read_bytes() for f in (out / "x").iterdir()} == kept
    assert sources(out) == {"x": str(first.resolve()), "x-2": str(second.resolve())}
    assert f"holds {first.resolve()}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):  # each resumes from its own folder, in any order
        run(out, second, first)
    assert f"finished earlier ({out / 'x-2'})" in caplog.text and f"finished earlier ({out / 'x'})" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["x", "x-2"]


@pytest.mark.parametrize(
    ("option", "value", "wrong"),
    [
        ("--window_s", "inf", "--window_s must be a finite number of seconds > 0 and up to 86400, got inf."),
        ("--stride_s", "inf", "--stride_s must be a finite number of seconds > 0 and up to 86400, got inf."),
        ("--window_s", "1e-9", "--window_s must be a finite number of seconds from 0.0334 to 86400 (the model's 4"),
    ],
)
def test_the_command_refuses_a_window_or_stride_out_of_range(
    tmp_path, make_model, processor, monkeypatch, capsys, option, value, wrong
):
    checkpoint = saved_checkpoint(make_model(), processor, tmp_path / "model")
    video = noise_video(tmp_path / "a.mp4", seconds=1.0)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(monkeypatch, "--checkpoint", str(checkpoint), "--output", str(out), option, value, str(video))
    assert exit_info.value.code == 2
    assert wrong in capsys.readouterr().err
    assert not out.exists()


# -------------------------------------------------------------------------------- accuracy against truth
def test_accuracy_counts_frames_and_measures_boundaries_by_hand():
    truth = [(0.0, 2.0, "a"), (2.0, 4.0, "unknown"), (4.0, 6.0, "unknown"), (6.0, 8.0, "b")]
    predicted = [(0.0, 2.5, "a"), (2.5, 6.0, "unknown"), (6.0, 8.0, "c")]
    score = timeline_accuracy(predicted, truth, (np.arange(32) + 0.5) / 4)
    # Wrong: the 2 frames in [2, 2.5) and the 8 in [6, 8): 22 of 32 right. Boundaries at 2 and 6 (two unknown
    # classes in a row are one unknown stretch), found at 2.5 and 6.
    assert score.frame_accuracy == pytest.approx(22 / 32)
    assert score.boundary_errors == [0.5, 0.0] and score.median_boundary_error == 0.25


def test_a_stitched_recording_of_known_and_unknown_clips_is_timed_right(tmp_path):
    """Clips of two known and one unknown synthetic class joined end to end, against a prototype head on the
    embedded CLIP's frozen features fitted on other clips of the known classes (no training needed)."""
    from hesp_hf.embedded.synthetic import render_clip

    known, unknown = ["happiness", "anger"], "surprise"
    model, processor = frozen_prototype_model(known)

    order = ["happiness", unknown, "anger", "happiness"]
    clips = [render_clip(label, seed)[0] for label in order for seed in (1, 2)]  # 2 s each, 8 fps
    path = write_video(tmp_path / "stitched.mp4", np.concatenate(clips), fps=8, options={"qp": "0"})
    truth = [(4.0 * i, 4.0 * i + 4.0, label if label in known else "unknown") for i, label in enumerate(order)]
    result = make_timeline(model, processor, path, window=2.0, stride=0.5)
    predicted = [(s.start, s.end, s.decision) for s in result.segments]
    score = timeline_accuracy(predicted, truth, (np.arange(128) + 0.5) / 8)
    assert score.frame_accuracy >= 0.85, predicted
    assert score.median_boundary_error <= 0.5, predicted


def test_the_summary_line_counts_segments_in_words():
    from hesp_hf.commands.timeline import _summary_line

    one = {"duration": 3.0, "segments": 1, "seconds_per_decision": {"happy": 3.0}}
    two = {"duration": 4.0, "segments": 2, "seconds_per_decision": {"happy": 3.0, "unknown": 1.0}}
    assert _summary_line(one, Path("out")) == "3.0 s, 1 segment (happy 3.0 s) -> out"
    assert _summary_line(two, Path("out")) == "4.0 s, 2 segments (happy 3.0 s, unknown 1.0 s) -> out"
