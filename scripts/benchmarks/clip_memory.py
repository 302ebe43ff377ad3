"""clip: the clip path on large footage (`HESPVideoProcessor` on a file: the pipeline, hesp-predict, training). For a
1 s 4K and a 1 s 1080p H.264 clip (1080p and 540p with --quick), 8 frames to a (8, 3, 224, 224) input: the peak
resident memory added and the time of the processor, against bare decoding (the same 8 frames decoded by PyAV and
held, nothing converted) and against the full-size path it replaced (every sampled frame converted to RGB at full
size, then resized by the processor). Each is measured in a fresh subprocess (`scripts/benchmark.py --clip_probe`).
Target: at most 150 MB added over bare decoding at 4K. With --trained_checkpoint: how much its logits and decisions
move between the two paths on the clips of --trained_clips (and, for the demo's list, its clips placed in scenes),
since the resize differs only by interpolation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from .fixtures import demo_test_list
from .harness import Settings, best_time, peak_rss_added


BENCHMARK_SCRIPT = Path(__file__).resolve().parents[1] / "benchmark.py"
WAYS = ("bare", "full_size", "ours")


def write_clip(path: Path, height: int, width: int, fps: int = 25) -> Path:
    """1 s of moving shapes over a gradient with a little noise (a camera-like bitrate), written one frame at a time so
    that a 4K clip never sits in memory whole."""
    import av

    from hesp_hf.atomic_files import atomic_output

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    with atomic_output(path) as temporary, av.open(str(temporary), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(fps)}
        for index in range(fps):
            frame = np.broadcast_to(ramp, (height, width, 3)).copy()
            top, left = height // 4 + index * height // 100, width // 4 + index * width // 60
            frame[top : top + height // 3, left : left + width // 4] = (220, 120, 60)
            frame += rng.normal(0, 6, (height // 8, width // 8, 1)).repeat(8, 0).repeat(8, 1)
            video_frame = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def clip_probe(path: str, way: str) -> None:
    """In this (fresh) process: the peak memory added and the best time of one way of reading 8 frames of `path`."""
    import av
    import torch

    from hesp_hf import HESPVideoProcessor
    from hesp_hf.modeling.video_decoding_hesp import decode_video, segment_indices

    torch.set_num_threads(1)
    processor = HESPVideoProcessor(num_frames=8)  # CLIP's: shortest edge 224, centre crop 224

    def bare() -> object:
        with av.open(path) as container:
            stream = container.streams.video[0]
            wanted = set(segment_indices(int(stream.frames), 8).tolist())
            return [frame for index, frame in enumerate(container.decode(stream)) if index in wanted]

    def full_size() -> object:  # what the processor did before: full-size RGB frames, resized after
        frames = decode_video(path, 8).frames
        return processor(torch.from_numpy(frames).permute(0, 3, 1, 2), do_sample_frames=False, return_tensors="pt")

    def ours() -> object:
        return processor([path], return_tensors="pt")

    run = {"bare": bare, "full_size": full_size, "ours": ours}[way]
    run()  # warm-up: codec and thread pools, which are no part of a clip's cost
    added = peak_rss_added(run)
    print(json.dumps({"added_mib": added / 2**20, "seconds": best_time(run, 3)}))


def benchmark_clip_memory(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    sizes = (
        {"1080p": (1080, 1920), "540p": (540, 960)} if settings.quick else {"4K": (2160, 3840), "1080p": (1080, 1920)}
    )
    rows, ratios = [], {}
    # A fixed mmap threshold: glibc otherwise raises it as large blocks are freed and keeps later ones in its heap,
    # so resident memory would count freed temporaries as if they were still live.
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    for name, (height, width) in sizes.items():
        path = settings.workdir / f"clip_{width}x{height}_1s.mp4"
        if not path.exists():
            write_clip(path, height, width)
        found = {}
        for way in WAYS:
            command = [sys.executable, str(BENCHMARK_SCRIPT), "--clip_probe", str(path), way]
            output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
            found[way] = json.loads(output.strip().splitlines()[-1])
        bare, full, ours = (found[way] for way in WAYS)
        over_bare, full_over_bare = ours["added_mib"] - bare["added_mib"], full["added_mib"] - bare["added_mib"]
        rows.append(
            {
                "what": f"{name} 1 s clip, 8 frames -> (8, 3, 224, 224): {ours['added_mib']:.0f} MiB added at peak, "
                f"{over_bare:.0f} MiB over bare decoding ({bare['added_mib']:.0f} MiB; target at 4K <= 150), full-size "
                f"path {full['added_mib']:.0f} MiB ({full_over_bare:.0f} over bare); {ours['seconds'] * 1000:.0f} ms, "
                f"bare {bare['seconds'] * 1000:.0f} ms, full-size {full['seconds'] * 1000:.0f} ms "
                "(ratio: bare decoding's time over ours)",
                "seconds": ours["seconds"],
                "ratio": bare["seconds"] / ours["seconds"],
            }
        )
        key = name.lower()
        ratios[f"clip.{key}_added_over_bare_mib"] = over_bare
        ratios[f"clip.{key}_full_size_added_over_bare_mib"] = full_over_bare
        ratios[f"clip.{key}_time_over_bare"] = ours["seconds"] / bare["seconds"]
        ratios[f"clip.{key}_time_over_full_size"] = ours["seconds"] / full["seconds"]
    if settings.trained_checkpoint:
        lists = [settings.trained_clips or demo_test_list()]
        if settings.trained_clips is None:  # the demo's step 5: the same faces placed in 256x144 scenes
            lists.append(demo_scene_list())
        for csv_path in lists:
            moved, mean, spread, changed, count = logit_movement(settings.trained_checkpoint, csv_path)
            rows.append(
                {
                    "what": f"{settings.trained_checkpoint} on {count} clips of {csv_path}: logits move by at most "
                    f"{moved:.3g} (mean {mean:.3g}; their standard deviation {spread:.3g}) between the full-size path "
                    f"and ours, {changed} decisions change",
                    "seconds": None,
                    "ratio": None,
                }
            )
            ratios[f"clip.logit_movement.{Path(csv_path).parent.name}"] = moved
    return rows, ratios


def demo_scene_list() -> str:
    """The test list of the demo's faces in scenes (`make demo`, step 5)."""
    from dataclasses import replace

    from hesp_hf.embedded.synthetic import SyntheticSpec

    spec = replace(SyntheticSpec(), train_per_class=0, scene_height=144)
    return str(Path("outputs/synthetic") / f"synthetic-{spec.key()}" / "test.csv")


def logit_movement(checkpoint: str, csv_path: str) -> tuple[float, float, float, int, int]:
    """Largest and mean absolute logit difference, the logits' own standard deviation (their scale), and the number
    of changed decisions between full-size decoding (then the processor's resize) and decoding at the processor's
    `decode_edge`, over the clips of a CSV list; with the number of clips."""
    import csv

    import torch

    from hesp_hf.data import ClipTransform
    from hesp_hf.data.decoding import sample_clip
    from hesp_hf.pairing import load_pair

    model, processor = load_pair(checkpoint)
    transform = ClipTransform(processor, training=False)
    with open(csv_path, newline="") as handle:
        paths = [str(Path(csv_path).parent / row["video_path"]) for row in csv.DictReader(handle)]
    before, after = [], []
    for path in paths:
        before.append(transform.process(sample_clip(path, processor.num_frames).frames))
        after.append(
            transform.process(sample_clip(path, processor.num_frames, shortest_edge=transform.decode_edge).frames)
        )
    with torch.no_grad():
        old = model(pixel_values_videos=torch.stack(before)).logits
        new = model(pixel_values_videos=torch.stack(after)).logits
    changed = int((old.argmax(-1) != new.argmax(-1)).sum())
    moved = (old - new).abs()
    return float(moved.max()), float(moved.mean()), float(old.std()), changed, len(paths)


run = benchmark_clip_memory
