"""How right `hesp-timeline` is on a recording whose truth is known: test clips of known and unknown classes joined
end to end (each class for `--clips_per_class` clips in a row), then the timeline scored against the true segments.

    make demo                                   # the demo checkpoint, outputs/demo
    python scripts/timeline_accuracy.py [--checkpoint outputs/demo] [--stride_s 0.5] [--clips_per_class 3]

Prints the frame-level accuracy (every frame of the recording; a clip of a class the model does not know counts as
right when the timeline says unknown), the median distance from each true change of label to the nearest change in
the timeline, and how much faster than real time the timeline ran. The recording and the timeline's files are
written under `--workdir`.
"""

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from hesp_hf.embedded.video_writer import write_video
from hesp_hf.evaluation.timeline_accuracy import timeline_accuracy
from hesp_hf.inference.timeline import timeline
from hesp_hf.inference.timeline_outputs import write_timeline
from hesp_hf.modeling.video_decoding_hesp import decode_video
from hesp_hf.pairing import load_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="outputs/demo", help="a trained HESP folder (default: make demo's)")
    parser.add_argument(
        "--test_csv", help="CSV with video_path,label of the test clips (default: the checkpoint's test annotation)"
    )
    parser.add_argument("--clips_per_class", type=int, default=3, help="clips of one class in a row (default 3)")
    parser.add_argument("--window_s", type=float, default=2.0)
    parser.add_argument("--stride_s", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="the order of the classes and which clips")
    parser.add_argument("--workdir", type=Path, default=Path("outputs/timeline-accuracy"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model, processor = load_pair(args.checkpoint)
    model.eval()
    recording, truth, fps = stitch(args, model.config.known_labels, model.config.unknown_label)
    started = time.perf_counter()
    result = timeline(model, processor, recording, window=args.window_s, stride=args.stride_s)
    seconds = time.perf_counter() - started
    write_timeline(result, args.workdir / "timeline", recording.stem)
    predicted = [(s.start, s.end, s.decision) for s in result.segments]
    frame_times = (np.arange(round(result.duration * fps)) + 0.5) / fps
    score = timeline_accuracy(predicted, truth, frame_times)
    report = {
        "checkpoint": str(args.checkpoint),
        "recording_seconds": round(result.duration, 2),
        "window_s": args.window_s,
        "stride_s": result.stride,
        "frame_accuracy": round(score.frame_accuracy, 4),
        "median_boundary_error_s": score.median_boundary_error,
        "boundary_errors_s": [round(e, 3) for e in score.boundary_errors],
        "times_real_time": round(result.duration / seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (args.workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def stitch(args: argparse.Namespace, known: list[str], unknown_label: str) -> tuple[Path, list, float]:
    """The joined recording, its true spans `(start, end, label or unknown)` and its frame rate."""
    test_csv = Path(args.test_csv or _test_annotation(Path(args.checkpoint)))
    with test_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    by_class: dict[str, list[str]] = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(str(test_csv.parent / row["video_path"]))
    rng = random.Random(args.seed)
    classes = sorted(by_class)
    rng.shuffle(classes)
    frames, truth, start, fps = [], [], 0.0, None
    for name in classes:
        for path in rng.sample(by_class[name], min(args.clips_per_class, len(by_class[name]))):
            clip = decode_video(path)
            rate = (len(clip.timestamps) - 1) / (clip.timestamps[-1] - clip.timestamps[0])
            fps = fps or round(rate)
            if frames and clip.frames.shape[1:] != frames[0].shape[1:]:
                raise ValueError(f"{path}: frames of {clip.frames.shape[1:]}, the others {frames[0].shape[1:]}")
            frames.append(clip.frames)
            end = start + len(clip.frames) / fps
            truth.append((start, end, name if name in known else unknown_label))
            start = end
    recording = args.workdir / f"stitched-seed{args.seed}-{args.clips_per_class}per-class.mp4"
    # Near-lossless (qp 0): the clips were decoded once already; a second lossy pass would blur their faces.
    write_video(recording, np.concatenate(frames), fps=fps, options={"qp": "0"})
    return recording, truth, float(fps)


def _test_annotation(checkpoint: Path) -> str:
    arguments = checkpoint / "run_arguments.json"
    if not arguments.is_file():
        raise SystemExit(f"{checkpoint} has no run_arguments.json: pass --test_csv")
    return json.loads(arguments.read_text())["data"]["test_annotation"]


if __name__ == "__main__":
    main()
