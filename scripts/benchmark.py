"""Side-by-side benchmarks: each row is measured against its baseline in the same run and reported as a ratio.

    python scripts/benchmark.py [--quick] [--json FILE]

Sections:
- metric: OSCR + AUROC of `hesp_hf.metrics.open_set_metrics` on N = 1,000,000 predictions, and its speed-up over the
  O(n^2) definition loop (one count over all samples per threshold, as the widely copied ARPL code does) at N = 20,000.
- decode: clips/s to sample 8 frames (segment centres) from a 10-second 720p H.264 clip with `hesp_hf.data.sample_clip`
  against `transformers.video_utils.load_video(..., backend="pyav")` with the same indices; for a clip with a keyframe
  every second (camera and streaming video) and one with x264's default single keyframe per 250 frames; and from a
  folder of 250 JPEG frames against opening every frame of the folder.

Absolute times are printed with the machine they came from; compare ratios, not seconds, across machines.
"""

import _unshadow  # noqa: F401, I001  (first: keeps scripts/evaluate.py from shadowing `evaluate`)


import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hesp_hf.metrics import open_set_metrics


def best_time(function: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs (the least disturbed by other load on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def open_set_problem(n: int, k: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    references = rng.integers(0, k, n)
    references[rng.random(n) < 0.3] = -1
    known = references >= 0
    logits[known, references[known]] += 1.5
    return logits, references


def definition_loop_oscr(logits: np.ndarray, references: np.ndarray) -> float:
    """OSCR by its definition, one pass over all samples per threshold: O(n^2)."""
    scores = logits.max(axis=1).astype(np.float64)
    known = references != -1
    correct = known & (logits.argmax(axis=1) == references)
    points = [(0.0, 0.0)]
    for threshold in np.unique(scores)[::-1]:
        accepted = scores >= threshold
        points.append(((accepted & ~known).sum() / (~known).sum(), (accepted & correct).sum() / known.sum()))
    points = np.array(points)
    return float(np.sum(np.diff(points[:, 0]) * (points[1:, 1] + points[:-1, 1]) / 2))


def benchmark_metric(quick: bool) -> tuple[list[dict], dict[str, float]]:
    large, small = (100_000, 4_000) if quick else (1_000_000, 20_000)
    logits, references = open_set_problem(large)
    fast_large = best_time(lambda: open_set_metrics(logits, references), repeats=3)
    small_logits, small_references = logits[:small], references[:small]
    fast_small = best_time(lambda: open_set_metrics(small_logits, small_references), repeats=5)
    naive_small = best_time(lambda: definition_loop_oscr(small_logits, small_references), repeats=1)
    agreement = abs(
        open_set_metrics(small_logits, small_references)["oscr"] - definition_loop_oscr(small_logits, small_references)
    )
    rows = [
        {"what": f"open_set_metrics (ACC+AUROC+OSCR+FPR95), N={large:,}", "seconds": fast_large, "ratio": None},
        {"what": f"open_set_metrics, N={small:,}", "seconds": fast_small, "ratio": None},
        {
            "what": f"O(n^2) definition loop, N={small:,} (|OSCR diff| {agreement:.1e})",
            "seconds": naive_small,
            "ratio": naive_small / fast_small,
        },
    ]
    key = "metric.speedup_over_naive_20k" if not quick else "metric.speedup_over_naive_quick"
    return rows, {
        key: naive_small / fast_small,
        "metric.seconds_1m" if not quick else "metric.seconds_quick": fast_large,
    }


def benchmark_decode(quick: bool, workdir: Path) -> tuple[list[dict], dict[str, float]]:
    from PIL import Image
    from transformers.video_utils import load_video

    from hesp_hf.data import sample_clip
    from hesp_hf.data.decoding import frame_files
    from hesp_hf.modeling.video_processing_hesp import segment_indices
    from hesp_hf.video_writer import write_video

    seconds, fps = (4, 25) if quick else (10, 25)
    height, width = (360, 640) if quick else (720, 1280)
    frames = synthetic_frames(seconds * fps, height, width)
    rows, ratios = [], {}
    for name, keyint in (("keyframe every 1 s", fps), ("x264 default keyint=250", 250)):
        path = workdir / f"clip_keyint{keyint}.mp4"
        if not path.exists():
            write_video(path, frames, fps=fps, options={"g": str(keyint), "preset": "veryfast"})

        def ours(path=path):
            return sample_clip(path, 8)

        def stock(path=path):
            return load_video(
                str(path),
                backend="pyav",
                sample_indices_fn=lambda metadata, **_: segment_indices(metadata.total_num_frames, 8),
            )[0]

        assert np.array_equal(ours(), stock()), "the two readers disagree"
        repeats = 2 if quick else 3
        t_ours, t_stock = best_time(ours, repeats), best_time(stock, repeats)
        rows.append(
            {
                "what": f"8 of {len(frames)} frames, {width}x{height} H.264, {name}: load_video(pyav) {1 / t_stock:.1f} clips/s, ours {1 / t_ours:.1f} clips/s",
                "seconds": t_ours,
                "ratio": t_stock / t_ours,
            }
        )
        ratios[f"decode.speedup_over_load_video{'' if keyint == fps else '_keyint250'}"] = t_stock / t_ours
    folder = workdir / "frames"
    if not folder.exists():
        folder.mkdir()
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=90)

    def every_frame():
        return [np.asarray(Image.open(file).convert("RGB")) for file in frame_files(folder)]

    t_folder, t_all = best_time(lambda: sample_clip(folder, 8), 3), best_time(every_frame, 1)
    rows.append(
        {
            "what": f"8 of {len(frames)} JPEG frames from a folder, {1 / t_folder:.1f} clips/s, against reading every frame",
            "seconds": t_folder,
            "ratio": t_all / t_folder,
        }
    )
    ratios["decode.frame_folder_speedup_over_reading_all"] = t_all / t_folder
    return rows, ratios


def synthetic_frames(count: int, height: int, width: int) -> np.ndarray:
    """A moving textured scene with sensor-like noise, so the encoder produces real motion-compensated P/B frames
    with residuals, as camera footage does (a clean synthetic scene decodes unrealistically fast)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    base = ((np.sin(rows / 23.0) + np.cos(cols / 31.0)) * 60 + 128).astype(np.float32)
    video = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        shifted = np.roll(base, (2 * t, 3 * t), axis=(0, 1))
        video[t, ..., 0] = shifted
        video[t, ..., 1] = np.roll(shifted, 17, axis=1)
        video[t, ..., 2] = 255 - shifted
        top, left = (t * 5) % (height - 80), (t * 9) % (width - 80)
        video[t, top : top + 80, left : left + 80] = (230, 40, 40)
        noise = rng.integers(-3, 4, (height, width, 1), dtype=np.int16)
        video[t] = np.clip(video[t].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return video


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shrink every size so the script ends in about a minute")
    parser.add_argument("--json", type=Path, help="write the ratios (and times) to this JSON file")
    parser.add_argument("--only", nargs="*", help="run only these sections (metric, decode)")
    parser.add_argument("--workdir", type=Path, default=Path("outputs/benchmark"), help="where test clips are cached")
    args = parser.parse_args()

    sections: dict[str, Callable[[], tuple[list[dict], dict[str, float]]]] = {
        "metric": lambda: benchmark_metric(args.quick),
        "decode": lambda: benchmark_decode(args.quick, args.workdir),
    }
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\n")
    print("| section | what | seconds (ours) | ratio (baseline / ours) |")
    print("| --- | --- | --- | --- |")
    ratios: dict[str, float] = {}
    for name, run in sections.items():
        if args.only and name not in args.only:
            continue
        rows, section_ratios = run()
        ratios.update(section_ratios)
        for row in rows:
            ratio = "" if row["ratio"] is None else f"{row['ratio']:.1f}x"
            print(f"| {name} | {row['what']} | {row['seconds']:.4f} | {ratio} |", flush=True)
    if args.json:
        temporary = args.json.with_suffix(args.json.suffix + ".tmp")
        temporary.write_text(json.dumps({"machine": machine(), **ratios}, indent=2))
        temporary.replace(args.json)  # whole or not at all


if __name__ == "__main__":
    main()
