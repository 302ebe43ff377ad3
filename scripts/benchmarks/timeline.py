"""timeline: `hesp-timeline` on long 720p recordings, window 2 s with 8 frames (4 frames a second sampled): how much
faster than real time at ViT-B/32 size and at the demo checkpoint, what a small stride costs against a large one
(the frames' tower passes are shared between overlapping windows), and the resident memory a one-hour 720p file
adds (decoding streams: memory holds one batch of frames, not the file)."""

from functools import partial
from pathlib import Path

import numpy as np

from .fixtures import synthetic_frames, vit_b32_models
from .harness import Settings, best_times_in_rotation, peak_rss_added


WINDOW_S = 2.0


def repeated_video(path: Path, seconds: float, fps: int, height: int, width: int) -> Path:
    """A long H.264 recording made cheaply: 2 s of a moving scene encoded once (a keyframe each second, B-frames as
    cameras and phones write them), its packets muxed again and again with later timestamps."""
    import av

    from hesp_hf.atomic_files import atomic_output
    from hesp_hf.embedded.video_writer import write_video

    if path.exists():
        return path
    unit = path.with_suffix(".unit.mp4")
    write_video(unit, synthetic_frames(2 * fps, height, width), fps=fps, options={"g": str(fps), "preset": "veryfast"})
    with av.open(str(unit)) as reader:
        template = reader.streams.video[0]
        packets = [packet for packet in reader.demux(template) if packet.size]
        step = 2 * fps * packets[0].duration  # one unit, in stream ticks
        with atomic_output(path) as temporary, av.open(str(temporary), "w") as writer:
            stream = writer.add_stream_from_template(template)
            for repeat in range(int(np.ceil(seconds / 2))):
                for packet in packets:
                    pts, dts = packet.pts, packet.dts
                    packet.pts, packet.dts = pts + repeat * step, dts + repeat * step
                    packet.stream = stream
                    writer.mux(packet)
                    packet.pts, packet.dts = pts, dts
    unit.unlink()
    return path


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
    return rows, ratios
