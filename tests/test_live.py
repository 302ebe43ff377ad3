"""The live timeline: a stream fed through a pipe at the pace it plays gives its rows while it plays, and the same
decisions as the recording's timeline; Ctrl-C / SIGTERM in the middle leaves complete files; a stalled stream is
waited for and a silent one ends the run; a stream cut inside a packet ends cleanly; a model that falls behind drops
frames (counted, memory bounded) instead of queueing them; a source that is missing or not video is one line."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hesp_hf import HESPVideoProcessor, VideoDecodeError
from hesp_hf.data.live_source import LiveFrames, LiveSourceError
from hesp_hf.embedded.paced_stream import Pacing, feed
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.inference.live import DROPPED, LiveTimeline, record_live
from hesp_hf.inference.timeline import timeline as make_timeline

from .conftest import random_video


WINDOW, STRIDE = 1.0, 0.25  # 4 frames over 1 s: 4 sampled frames a second, one per stride


@pytest.fixture
def processor(tiny_clip_dir):
    return HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)


def stream_file(path: Path, seconds: float, fps: int = 8) -> Path:
    """An MPEG-TS recording of noise at the tiny model's size, a keyframe a second, no encoder delay (as a live
    encoder sends it)."""
    frames = random_video(frames=int(seconds * fps), height=32, width=40, seed=5)
    return write_video(path, frames, fps=fps, options={"g": str(fps), "tune": "zerolatency"})


class Feeder:
    """`feed` in a thread into a pipe; `finished` is set once every byte is written; the write end is closed then,
    or by `close()` when `keep_open` (a stream that goes silent without ending)."""

    def __init__(self, path: Path, pacing: Pacing | None = None, keep_open: bool = False):
        self.read_fd, self.write_fd = os.pipe()
        self.finished = threading.Event()
        self.keep_open = keep_open

        def run() -> None:
            try:
                feed(path, self.write_fd, pacing)
            except BrokenPipeError:
                pass
            self.finished.set()
            if not keep_open:
                self.close()

        self.thread = threading.Thread(target=run, daemon=True)  # closes the write end itself unless keep_open
        self.thread.start()

    def close(self) -> None:
        try:
            os.close(self.write_fd)
        except OSError:
            pass

    def join(self) -> None:
        os.close(self.read_fd)  # a writer still feeding gets a broken pipe and ends
        if self.keep_open:
            self.close()
        self.thread.join(timeout=30)


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "windows.jsonl").read_text().splitlines()]


def assert_complete(folder: Path, summary: dict) -> None:
    """Every file the summary lists is there, the rows are the summary's windows, the segments tile the run."""
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk["windows"] == summary["windows"] == len(rows(folder))
    assert all((folder / name).is_file() for name in on_disk["files"])
    segments = [json.loads(line) for line in (folder / "segments.jsonl").read_text().splitlines()]
    assert len(segments) == on_disk["segments"]
    if segments:
        assert segments[0]["start"] == 0.0 and segments[-1]["end"] == pytest.approx(on_disk["duration"], abs=1e-3)
        assert all(a["end"] == b["start"] for a, b in zip(segments, segments[1:], strict=False))
    cues = [
        block
        for block in (folder / next(n for n in on_disk["files"] if n.endswith(".vtt"))).read_text().split("\n\n")[1:]
        if block.strip()
    ]
    assert len(cues) == len(segments)


# ------------------------------------------------------------------------------------------- as it plays
def test_rows_appear_while_the_stream_plays_and_equal_the_recordings_timeline(tmp_path, make_model, processor):
    model = make_model().eval()
    model.config.unknown_threshold = 0.0
    path = stream_file(tmp_path / "session.ts", seconds=4.0)
    feeder = Feeder(path)
    live = LiveTimeline(model, processor, feeder.read_fd, WINDOW, STRIDE, max_queue_frames=64)
    playing_at_row: list[bool] = []
    summary = record_live(
        live, tmp_path / "out", "session", on_window=lambda _: playing_at_row.append(not feeder.finished.is_set())
    )
    feeder.join()
    # The first rows were decided while the stream was still being fed, the last after it ended.
    assert playing_at_row[0] and not playing_at_row[-1]
    written = rows(tmp_path / "out")
    reference = make_timeline(model, processor, path, WINDOW, STRIDE)  # the recording, read as a file
    assert [(r["start"], r["end"]) for r in written] == [
        (round(w.start, 3), round(w.end, 3)) for w in reference.windows
    ]
    for row, window in zip(written, reference.windows, strict=True):
        assert row["status"] == "ok" and row["label"] == window.label
        assert row["score"] == pytest.approx(window.score, abs=1e-4)
        assert row["latency_s"] >= 0 and row["dropped_frames"] == 0
    assert summary["live"]["ended"] == "end of input" and summary["live"]["dropped_frames"] == 0
    assert summary["duration"] == pytest.approx(4.0, abs=0.2)
    latency = summary["live"]["latency_s"]
    assert 0 <= latency["median"] <= latency["p95"] <= latency["max"]
    assert_complete(tmp_path / "out", summary)


def test_a_model_that_falls_behind_drops_frames_instead_of_queueing_them(tmp_path, make_model, processor):
    model = make_model().eval()
    encode = model.frame_features

    def slow(frames, *args, **kwargs):  # 0.4 s a frame: 2.5 frames a second against 4 arriving
        time.sleep(0.4 * len(frames))
        return encode(frames, *args, **kwargs)

    model.frame_features = slow
    feeder = Feeder(stream_file(tmp_path / "session.ts", seconds=4.0))
    live = LiveTimeline(model, processor, feeder.read_fd, WINDOW, STRIDE, max_queue_frames=4)
    summary = record_live(live, tmp_path / "out", "session")
    feeder.join()
    written = rows(tmp_path / "out")
    info = summary["live"]
    assert info["dropped_frames"] > 0 and live.frames.most_queued <= 4
    assert info["sampled_frames"] == 16 and info["drop_rate"] == pytest.approx(info["dropped_frames"] / 16, abs=1e-4)
    # Every window is there, in order; those that lost a frame are marked, not decided.
    assert [r["start"] for r in written] == [round(STRIDE * k, 3) for k in range(len(written))]
    assert len(written) == 13
    assert info["dropped_windows"] == sum(r["status"] == DROPPED for r in written) > 0
    assert all(r["label"] is None for r in written if r["status"] == DROPPED)
    counts = [r["dropped_frames"] for r in written]
    assert counts == sorted(counts) and counts[-1] <= info["dropped_frames"]
    assert_complete(tmp_path / "out", summary)


# ------------------------------------------------------------------------------------- how streams end
def test_a_stalled_stream_is_waited_for_and_a_silent_one_ends_the_run(tmp_path, make_model, processor):
    path = stream_file(tmp_path / "session.ts", seconds=3.0)
    # A 1 s pause in the middle (waited for), then the pipe stays open and silent (ends the run after 4 s).
    feeder = Feeder(path, Pacing(pause_at_s=1.5, pause_s=1.0), keep_open=True)
    live = LiveTimeline(make_model().eval(), processor, feeder.read_fd, WINDOW, STRIDE, stall_timeout_s=4.0)
    summary = record_live(live, tmp_path / "out", "session")
    assert feeder.finished.is_set()  # the run ended while the pipe was still open
    feeder.join()
    written = rows(tmp_path / "out")
    assert summary["live"]["ended"] == "stalled" and summary["gaps"] == []
    assert len(written) == 9 and all(r["status"] == "ok" for r in written)  # (3 s - 1 s) / 0.25 s + 1
    assert_complete(tmp_path / "out", summary)


def test_a_stream_cut_inside_a_packet_ends_the_run_cleanly(tmp_path, make_model, processor):
    path = stream_file(tmp_path / "session.ts", seconds=4.0)
    feeder = Feeder(path, Pacing(cut_at=0.55))
    live = LiveTimeline(make_model().eval(), processor, feeder.read_fd, WINDOW, STRIDE)
    summary = record_live(live, tmp_path / "out", "session")
    feeder.join()
    written = rows(tmp_path / "out")
    assert summary["live"]["ended"] in ("end of input", "broken")
    # What arrived before the cut is decided; nothing past the bytes that came.
    assert 3 <= len(written) < 13 and written[0]["status"] == "ok"
    assert written[-1]["end"] <= 0.6 * 4.0 + 0.5
    assert_complete(tmp_path / "out", summary)


# -------------------------------------------------------------------------------------------- the command
def saved_checkpoint(model, processor, folder: Path) -> Path:
    model.config.unknown_threshold = 0.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_ctrl_c_in_the_middle_leaves_complete_files(tmp_path, make_model, processor):
    checkpoint = saved_checkpoint(make_model(), processor, tmp_path / "model")
    path = stream_file(tmp_path / "session.ts", seconds=30.0)
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    feeder = subprocess.Popen(
        [sys.executable, "-m", "hesp_hf.embedded.paced_stream", str(path)], stdout=subprocess.PIPE, env=environment
    )
    command = [sys.executable, "-m", "hesp_hf.commands.timeline", "--live", "-", "--checkpoint", str(checkpoint)]
    command += ["--output", str(tmp_path / "out"), "--window_s", str(WINDOW), "--stride_s", str(STRIDE)]
    run = subprocess.Popen(
        command, stdin=feeder.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    feeder.stdout.close()  # the command holds the pipe now
    try:
        waited_since = time.monotonic()
        while (
            not list((tmp_path / "out").glob("live-*/windows.jsonl"))
            or len(rows(next((tmp_path / "out").glob("live-*")))) < 3
        ):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() - waited_since < 120, "no rows came"
            time.sleep(0.2)
        assert feeder.poll() is None  # the stream is still playing
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        feeder.kill()
        feeder.wait()
        run.kill()
    assert run.returncode == 0, err
    folder = next((tmp_path / "out").glob("live-*"))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["live"]["ended"] == "stopped" and summary["settings"]["live"] == "standard input"
    written = rows(folder)
    assert 3 <= len(written) < 117  # the stream's 30 s would give 117 windows
    assert [line.split()[0] for line in out.splitlines()] == [f"{r['start']:.2f}-" for r in written]
    assert_complete(folder, summary)


def test_a_source_that_is_missing_or_not_video_is_one_line(tmp_path, make_model, processor, monkeypatch, capsys):
    import av

    with pytest.raises(LiveSourceError, match=r"live source .*nowhere\.ts does not exist: expected '-'"):
        LiveFrames(str(tmp_path / "nowhere.ts"), rate=4)
    recording = stream_file(tmp_path / "done.ts", seconds=1.0)
    with pytest.raises(LiveSourceError, match="is a finished recording.*without --live"):
        LiveFrames(str(recording), rate=4)
    with pytest.raises(
        LiveSourceError, match=r"no v4l2 \(video4linux2\) input.*ffmpeg -f v4l2 -i /dev/video0 -f mpegts -"
    ):
        LiveFrames("/dev/video0", rate=4, input_format="v4l2")

    def piped(data: bytes) -> int:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, data)
        os.close(write_fd)
        return read_fd

    with pytest.raises(LiveSourceError, match="is not a video stream FFmpeg can read"):
        LiveFrames(piped(b"just some text, not a video\n" * 200), rate=4)
    with pytest.raises(LiveSourceError, match="ended before any data arrived"):
        LiveFrames(piped(b""), rate=4)
    audio = tmp_path / "voice.ts"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("mp2", rate=16000, layout="mono")
        samples = (np.sin(np.arange(16000) / 10) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match="has no video stream: audio only"):
        LiveFrames(piped(audio.read_bytes()), rate=4)

    # The command: one line and exit status 2.
    checkpoint = saved_checkpoint(make_model(), processor, tmp_path / "model")
    monkeypatch.setattr(
        sys,
        "argv",
        ["hesp-timeline", "--live", str(tmp_path / "nowhere.ts"), "--checkpoint", str(checkpoint)]
        + ["--output", str(tmp_path / "out")],
    )
    from hesp_hf.commands import timeline as command

    with pytest.raises(SystemExit) as exit_info:
        command.cli()
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert errors[0].startswith("hesp-timeline: error: live source") and "does not exist" in errors[0]
    assert not errors[1:] or errors[1].startswith("(set HESP_DEBUG=1")
    assert not (tmp_path / "out").exists()


def test_sigterm_in_the_middle_leaves_complete_files(tmp_path, make_model, processor):
    """The command's handler, in this process: SIGTERM once rows are coming ends the run with every file."""
    import argparse

    from hesp_hf.commands.timeline_live import run_live

    feeder = Feeder(stream_file(tmp_path / "session.ts", seconds=30.0))
    args = argparse.Namespace(
        live=feeder.read_fd,
        checkpoint="tiny",
        output=str(tmp_path / "out"),
        window_s=WINDOW,
        stride_s=STRIDE,
        faces=None,
        min_track_s=1.0,
        max_faces=8,
        bf16=False,
        precision="fp32",
        batch_size=32,
        stall_timeout_s=10.0,
        max_queue_frames=None,
        input_format=None,
    )
    before = signal.getsignal(signal.SIGTERM)

    def terminate_once_rows_come() -> None:  # rows exist only once run_live's handler is in place
        while not any(len(rows(folder)) >= 2 for folder in (tmp_path / "out").glob("live-*")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=terminate_once_rows_come, daemon=True)
    sender.start()
    summary = run_live(args, make_model().eval(), processor)
    sender.join(timeout=30)
    assert not feeder.finished.is_set()  # stopped while the stream still played
    feeder.join()
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
    folder = next((tmp_path / "out").glob("live-*"))
    assert summary["live"]["ended"] == "stopped" and 2 <= summary["windows"] < 117
    assert_complete(folder, summary)
