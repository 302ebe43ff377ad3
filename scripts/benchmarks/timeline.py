"""timeline: `hesp-timeline` on long 720p recordings, window 2 s with 8 frames (4 frames a second sampled): how much
faster than real time at ViT-B/32 size and at the demo checkpoint, what a small stride costs against a large one
(the frames' tower passes are shared between overlapping windows), and the resident memory a one-hour 720p file
adds (decoding streams: memory holds one batch of frames, not the file). People: the two-person synthetic recording
at 720p followed with `faces="all"` against `faces="largest"` (one person) on the same footage, and the memory an
hour of it adds."""

from functools import partial
from pathlib import Path

import numpy as np

from .fixtures import synthetic_frames, vit_b32_models
from .harness import Settings, best_times_in_rotation, peak_rss_added


WINDOW_S = 2.0


def repeated_video(path: Path, seconds: float, fps: int, height: int, width: int) -> Path:
    """A long H.264 recording made cheaply: 2 s of a moving scene encoded once (a keyframe each second, B-frames as
    cameras and phones write them), its packets muxed again and again with later timestamps."""

    from hesp_hf.embedded.video_writer import write_video

    if path.exists():
        return path
    unit = path.with_suffix(".unit.mp4")
    write_video(unit, synthetic_frames(2 * fps, height, width), fps=fps, options={"g": str(fps), "preset": "veryfast"})
    repeated_unit(unit, 2 * fps, 2.0, seconds, path)
    unit.unlink()
    return path


def repeated_unit(unit: Path, frames: int, unit_seconds: float, seconds: float, path: Path) -> Path:
    """`unit` (starting with a keyframe, `frames` frames over `unit_seconds`) muxed again and again to `seconds`."""
    import av

    from hesp_hf.atomic_files import atomic_output

    with av.open(str(unit)) as reader:
        template = reader.streams.video[0]
        packets = [packet for packet in reader.demux(template) if packet.size]
        step = frames * packets[0].duration  # one unit, in stream ticks
        with atomic_output(path) as temporary, av.open(str(temporary), "w") as writer:
            stream = writer.add_stream_from_template(template)
            for repeat in range(int(np.ceil(seconds / unit_seconds))):
                for packet in packets:
                    pts, dts = packet.pts, packet.dts
                    packet.pts, packet.dts = pts + repeat * step, dts + repeat * step
                    packet.stream = stream
                    writer.mux(packet)
                    packet.pts, packet.dts = pts, dts
    return path


def people_video(workdir: Path, height: int, fps: int, people: tuple[str, ...] = ("A", "B")) -> Path:
    """The two-person synthetic recording (24 s) encoded as a camera would (a keyframe each second)."""
    from hesp_hf.embedded.synthetic_people import two_people_recording

    path = workdir / f"people-{''.join(people)}-{height}p-{fps}fps.mp4"
    if not path.exists():
        options = {"g": str(fps), "preset": "veryfast"}
        two_people_recording(path, height, fps=fps, people=people, options=options)
    return path


def run_people(settings: Settings, setups: list, processors: dict) -> tuple[list[dict], dict[str, float]]:
    """`faces="all"` (two people) against `faces="largest"` (one) on the same footage; an hour's memory."""
    from hesp_hf.inference.timeline import timeline

    quick, workdir = settings.quick, settings.workdir
    height = 360 if quick else 720
    video = people_video(workdir, height, 25)
    rows, ratios = [], {}
    targets = {"vit_b32": 2.1, "demo": 1.6}
    for key, description, model in setups:
        processor = processors[key]
        processor.face_min_score = 0.05  # drawn faces (docs/timeline.md)
        calls = {
            faces: partial(timeline, model, processor, video, window=WINDOW_S, stride=0.5, faces=faces)
            for faces in ("largest", "all")
        }
        times = best_times_in_rotation(calls, 3 if not quick else 2)  # best of 3: the two runs differ little
        cost = times["all"] / times["largest"]
        ratios[f"timeline.{key}.two_people_over_one"] = cost
        for faces in ("largest", "all"):
            ratios[f"timeline.{key}.faces_{faces}.times_real_time"] = 24.0 / times[faces]
        rows.append(
            {
                "what": f"{description}, two people {height}p 24 s: --faces all {24.0 / times['all']:.1f}x real "
                f"time, --faces largest {24.0 / times['largest']:.1f}x; all costs {cost:.2f}x largest (target <= "
                f"{targets[key]}x)",
                "seconds": times["all"],
                "ratio": cost,
            }
        )
    if not quick:
        unit = people_video(workdir, 720, 5)
        long_video = workdir / "people-720p-3600s-5fps.mp4"
        if not long_video.exists():
            repeated_unit(unit, 24 * 5, 24.0, 3600, long_video)
        key, _, model = setups[-1]
        added = peak_rss_added(lambda: timeline(model, processors[key], long_video, window=WINDOW_S, faces="all"))
        ratios["timeline.people_one_hour_720p.peak_rss_added_mb"] = added / 2**20
        rows.append(
            {
                "what": f"one hour of two-person 720p ({key} model, --faces all): {added / 2**20:.0f} MB resident "
                "memory added (target <= 100 MB)",
                "seconds": None,
                "ratio": None,
            }
        )
    return rows, ratios


def run(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    import torch

    from hesp_hf import HESPVideoProcessor
    from hesp_hf.inference.timeline import timeline
    from hesp_hf.pairing import load_pair

    quick, workdir = settings.quick, settings.workdir
    seconds = 12 if quick else 60
    height, width = (360, 640) if quick else (720, 1280)
    video = repeated_video(workdir / f"timeline-{height}p-{seconds}s.mp4", seconds, 25, height, width)
    rows, ratios = [], {}
    setups = [
        ("vit_b32", "ViT-B/32-size towers", vit_b32_models(quick, settings.patch_size, ("attention",))["attention"])
    ]
    processors = {"vit_b32": HESPVideoProcessor(num_frames=8)}
    demo = Path("outputs/demo")
    if (demo / "model.safetensors").exists():
        model, processors["demo"] = load_pair(str(demo))
        setups.append(("demo", "the demo checkpoint", model.eval()))
    else:
        rows.append({"what": "demo checkpoint: skipped (run `make demo` first)", "seconds": None, "ratio": None})
    for key, description, model in setups:
        processor = processors[key]
        strides = (2.0, 0.5, 0.25)
        calls = {
            stride: partial(timeline, model, processor, video, window=WINDOW_S, stride=stride) for stride in strides
        }
        times = best_times_in_rotation(calls, 1 if not quick else 2)
        for stride in strides:
            speed = seconds / times[stride]
            ratios[f"timeline.{key}.stride{stride}.times_real_time"] = speed
            rows.append(
                {
                    "what": f"{description}, {height}p {seconds} s, stride {stride} s: {speed:.1f}x real time "
                    f"({torch.get_num_threads()} threads)",
                    "seconds": times[stride],
                    "ratio": None,
                }
            )
        cost = times[0.25] / times[2.0]
        ratios[f"timeline.{key}.stride0.25_over_stride2"] = cost
        rows.append(
            {
                "what": f"{description}: stride 0.25 s costs {cost:.2f}x stride 2 s (target <= 1.5x)",
                "seconds": None,
                "ratio": cost,
            }
        )
    if not quick:
        # Memory: one hour of 720p (5 frames a second, so that it is decoded in minutes) through the smallest model.
        long_video = repeated_video(workdir / "timeline-720p-3600s-5fps.mp4", 3600, 5, 720, 1280)
        key, _, model = setups[-1]
        added = peak_rss_added(lambda: timeline(model, processors[key], long_video, window=WINDOW_S, stride=0.5))
        ratios["timeline.one_hour_720p.peak_rss_added_mb"] = added / 2**20
        rows.append(
            {
                "what": f"one hour of 720p ({key} model, stride 0.5 s): {added / 2**20:.0f} MB resident memory added "
                "(target <= 300 MB)",
                "seconds": None,
                "ratio": None,
            }
        )
    people_rows, people_ratios = run_people(settings, setups, processors)
    return rows + people_rows, {**ratios, **people_ratios}
