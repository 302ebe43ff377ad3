"""How right `hesp-timeline` is on a recording whose truth is known: test clips of known and unknown classes joined
end to end (each class for `--clips_per_class` clips in a row), then the timeline scored against the true segments.

    make demo                                   # the demo checkpoint, outputs/demo
    python scripts/timeline_accuracy.py [--checkpoint outputs/demo] [--stride_s 0.5] [--clips_per_class 3]

Prints the frame-level accuracy (every frame of the recording; a clip of a class the model does not know counts as
right when the timeline says unknown), the median distance from each true change of label to the nearest change in
the timeline, and how much faster than real time the timeline ran. The recording and the timeline's files are
written under `--workdir`.

    python scripts/timeline_accuracy.py --people [--seed 0] [--people_height 360]

Two synthetic people side by side, each with their own expressions (6 classes of the checkpoint's data for 2 clips
each, in a seeded order), who swap places, change size, and one of whom leaves and comes back
(`hesp_hf.embedded.synthetic_people`): the `--faces all` timeline scored per person (frame-level accuracy, boundary
error) against the `--faces largest` timeline of the same footage with that person alone, the identity switches
against the true people, whether the returning person got their id back, and the same with each appearance
descriptor (SFace, colour), with how well each tells the two people apart face by face.
"""

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from hesp_hf.data.frame_stream import FrameStream
from hesp_hf.embedded.defaults import DEMO_FACE_SETTINGS
from hesp_hf.embedded.synthetic import CLASSES
from hesp_hf.embedded.synthetic_people import ABSENT, two_people_recording
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.evaluation.people_accuracy import people_accuracy
from hesp_hf.evaluation.timeline_accuracy import timeline_accuracy
from hesp_hf.inference.face_appearance import APPEARANCES, shared_descriptor
from hesp_hf.inference.face_tracks import distinct_faces
from hesp_hf.inference.timeline import timeline
from hesp_hf.inference.timeline_outputs import write_timeline
from hesp_hf.inference.timeline_people import people_timeline
from hesp_hf.modeling.face_cropping_hesp import shared_detector
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
    parser.add_argument("--people", action="store_true", help="the two-person recording, scored per person")
    parser.add_argument("--people_height", type=int, default=360, help="its frame height (16:9; default 360)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, processor = load_pair(args.checkpoint)
    model.eval()
    if args.people:
        report = people_report(args, model, processor)
        args.workdir.mkdir(parents=True, exist_ok=True)
        (args.workdir / "people-report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return
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


def people_report(args: argparse.Namespace, model, processor) -> dict:
    """The two-person recording against each person alone; identities and both appearance descriptors."""
    # Drawn faces: YuNet scores them 0.06-0.9 (real faces >= 0.81); the margin as the demo's scenes.
    processor.face_min_score, processor.face_margin = 0.05, DEMO_FACE_SETTINGS["face_margin"]
    rng = random.Random(args.seed)
    labels = {name: [label for label in rng.sample(CLASSES, 6) for _ in range(2)] for name in "AB"}
    folder = args.workdir / f"people-seed{args.seed}-{args.people_height}p"
    folder.mkdir(parents=True, exist_ok=True)
    tiles: dict = {}
    both = two_people_recording(folder / "two.mp4", args.people_height, labels, tiles=tiles)
    alone = {
        name: two_people_recording(folder / f"{name}.mp4", args.people_height, labels, people=(name,), tiles=tiles)
        for name in "AB"
    }
    options = {"window": args.window_s, "stride": args.stride_s}
    started = time.perf_counter()
    result = timeline(model, processor, both.path, faces="all", **options)
    seconds = time.perf_counter() - started
    write_timeline(result, folder / "timeline", "two")
    scored = _score_people(result, both, model)
    report: dict = {
        "checkpoint": str(args.checkpoint),
        "seed": args.seed,
        "labels": labels,
        "identity": scored.identity,
        "identity_switches": scored.identity_switches,
        "relinked": scored.relinked,
        "times_real_time": round(both.duration / seconds, 1),
        "people": {},
    }
    for name in "AB":
        single = timeline(model, processor, alone[name].path, faces="largest", **options)
        reference = _score_people(single, alone[name], model).accuracy[name]
        own = scored.accuracy[name]
        report["people"][name] = {
            "frame_accuracy": round(own.frame_accuracy, 4),
            "frame_accuracy_alone": round(reference.frame_accuracy, 4),
            "median_boundary_error_s": own.median_boundary_error,
            "median_boundary_error_alone_s": reference.median_boundary_error,
        }
    report["appearance"] = {}
    for name in APPEARANCES:
        linked = people_timeline(model, processor, both.path, faces="all", appearance=name, **options)
        found = _score_people(linked, both, model)
        report["appearance"][name] = {
            "identity_switches": found.identity_switches,
            "relinked": found.relinked,
            "people": len(linked.people),
            **appearance_separation(both, name, processor.face_min_score),
        }
    return report


def _score_people(result, recording, model):
    unknown = model.config.unknown_label
    known = set(model.config.known_labels)
    truth = {
        name: [(a, b, label if label in known or label == ABSENT else unknown) for a, b, label in spans]
        for name, spans in recording.truth.items()
    }
    windows = [(w.person, (w.start + w.end) / 2, w.face_box) for w in result.windows]
    segments = [(s.person, s.start, s.end, s.decision) for s in result.segments]
    frame_times = (np.arange(round(recording.duration * recording.fps)) + 0.5) / recording.fps
    return people_accuracy(windows, segments, truth, recording.who, frame_times)


def appearance_separation(recording, name: str, min_score: float, gallery: int = 8) -> dict:
    """Face by face (4 frames a second): each person's first `gallery` faces as their gallery, then for every later
    face whether it is nearer its own person than the other (cosine, best of the gallery), and how many of its own
    and of the other's similarities pass the descriptor's `same_person` level (re-links missed / wrong)."""
    detector, descriptor = shared_detector(min_score), shared_descriptor(name)
    kept: dict[str, list[np.ndarray]] = {}
    own, other = [], []
    for frame in FrameStream(recording.path, 4.0):
        for face in distinct_faces(detector.faces(frame.image)):
            person = recording.who(((face[0] + face[2]) / 2, (face[1] + face[3]) / 2), frame.time)
            if person is None:
                continue
            vector = descriptor(frame.image, face)
            if len(kept.setdefault(person, [])) < gallery:
                kept[person].append(vector)
                continue
            similar = {p: max(float(vector @ g) for g in vectors) for p, vectors in kept.items()}
            own.append(similar[person])
            other.append(max((v for p, v in similar.items() if p != person), default=-1.0))
    own_array, other_array = np.asarray(own), np.asarray(other)
    return {
        "faces": len(own),
        "nearest_is_own": round(float(np.mean(own_array > other_array)), 4),
        "own_below_level": round(float(np.mean(own_array < descriptor.same_person)), 4),
        "other_above_level": round(float(np.mean(other_array >= descriptor.same_person)), 4),
        "own_median": round(float(np.median(own_array)), 3),
        "other_median": round(float(np.median(other_array)), 3),
    }


def _test_annotation(checkpoint: Path) -> str:
    arguments = checkpoint / "run_arguments.json"
    if not arguments.is_file():
        raise SystemExit(f"{checkpoint} has no run_arguments.json: pass --test_csv")
    return json.loads(arguments.read_text())["data"]["test_annotation"]


if __name__ == "__main__":
    main()
