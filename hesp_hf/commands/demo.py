"""`hesp-demo` (`make demo` in a checkout): the main job, end to end, on the embedded default: synthetic facial-expression clips, HESP trained on the frozen
embedded tiny CLIP with hesp-train's arguments (`hesp_hf.commands.train.train_from_argv`, in this process),
calibration, evaluation on known + unknown clips, and the stock `pipeline("video-classification")` on a known and an
unknown clip; then the same test faces placed in cluttered scenes (raw footage), classified whole and with
`face_crop=True`.

    hesp-demo [--output_dir outputs/demo] [--epochs 12] [--train_per_class 40] [--test_per_class 15]

Afterwards `hesp-app` (run from the same folder) serves the model it wrote. Step 5 needs the face extra
(`pip install "hesp-hf[face]"`) and is skipped without it. The demo model learned drawn faces only: its answers on real
faces mean nothing.

The clips are cached (outputs/synthetic/) and reused by later runs. Training uses the hesp-hf recipe (see
docs/open-set-quality.md). The last line reads `demo: accuracy=<a> auroc=<b> oscr=<c>` (fractions; the known-ness score is
the max logit of the ensemble of the CLIP and reciprocal-point branches).
"""

import argparse
import csv
import importlib.util
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

from hesp_hf import HESPVideoProcessor
from hesp_hf.calibration import uncalibrated_logits
from hesp_hf.commands.cli import ArgumentParser, run_command
from hesp_hf.commands.evaluate import EvaluationArguments, evaluate_checkpoint
from hesp_hf.commands.train import options_argv, train_from_argv
from hesp_hf.data import ClipTransform
from hesp_hf.data.decoding import sample_clip
from hesp_hf.embedded.defaults import DEMO_FACE_SETTINGS, DEMO_KNOWN, synthetic_training_options
from hesp_hf.embedded.synthetic import CLASSES, CLIP_FPS, SyntheticSpec, write_synthetic_dataset
from hesp_hf.evaluation.report import markdown_table
from hesp_hf.metrics import open_set_metrics
from hesp_hf.modeling.face_cropping_hesp import crop_frames
from hesp_hf.modeling.modeling_hesp import UNKNOWN_LABEL_ID
from hesp_hf.pairing import load_pair
from hesp_hf.run.arguments import DataArguments


logger = logging.getLogger("demo")


def report(text: str) -> None:
    """The demo's results are its output, on stdout (its last line, `demo: ...`, is read by scripts); progress goes
    to the log."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def is_previous_demo_run(folder: Path) -> bool:
    """Whether `folder` is a run this demo wrote: its run_arguments.json trained on the demo's synthetic clips (a
    spec.json beside the training annotation). Anything else is a user's model and is never deleted."""
    try:
        arguments = json.loads((folder / "run_arguments.json").read_text())
        annotation = Path(arguments["data"]["train_annotation"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (annotation.parent / "spec.json").is_file()


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--data_dir", type=Path, default=Path("outputs/synthetic"))
    parser.add_argument("--clip_model", default=None, help="CLIP checkpoint (default: the embedded tiny CLIP)")
    parser.add_argument("--train_per_class", type=int, default=40)
    parser.add_argument("--test_per_class", type=int, default=15)
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more hesp-train arguments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    replace_previous = (args.output_dir / "config.json").exists()
    if replace_previous and not is_previous_demo_run(args.output_dir):
        raise ValueError(
            f"--output_dir {args.output_dir} holds a model that is not an earlier hesp-demo run (its "
            "run_arguments.json does not name the demo's synthetic clips): choose another --output_dir; the demo "
            "replaces only its own earlier runs."
        )

    spec = SyntheticSpec(train_per_class=args.train_per_class, test_per_class=args.test_per_class, seed=args.seed)
    logger.info("1/5 synthetic clips (%d classes, cached under %s)", len(CLASSES), args.data_dir)
    data = write_synthetic_dataset(args.data_dir, spec)

    logger.info(
        "2/5 training HESP on the known classes %s (hesp-train's arguments, in this process)",
        ", ".join(DEMO_KNOWN),
    )
    options = synthetic_training_options(
        data, args.output_dir, args.epochs, args.seed, args.batch_size, args.learning_rate, args.clip_model
    )
    if replace_previous:  # an earlier demo run: start afresh, not from its checkpoints
        shutil.rmtree(args.output_dir)
    # `--extra` holds train.py arguments: the recipe's options go through the same parser, so an extra one wins.
    metrics = train_from_argv([*options_argv(options), *args.extra]).metrics

    logger.info(
        "3/5 test set: %d known + %d unknown clips; known-ness score: %s",
        metrics["num_known"],
        metrics["num_unknown"],
        metrics["score"],
    )
    reported = ("accuracy", "auroc", "oscr", "fpr_at_95_tpr", "known_accepted_share", "unknown_rejected_share")
    report("\n" + markdown_table(["metric", "value"], [[name, f"{metrics[name]:.4f}"] for name in reported]))
    report(f"curves: {args.output_dir / 'curves.png'}\nmodel card: {args.output_dir / 'README.md'}\n")

    logger.info("4/5 pipeline('video-classification') on a known and an unknown test clip")
    classifier = pipeline("video-classification", model=str(args.output_dir))
    with (data / "test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    known_clip = next(r for r in rows if r["label"] == DEMO_KNOWN[1])
    unknown_clip = next(r for r in rows if r["label"] not in DEMO_KNOWN)
    for row, kind in ((known_clip, "known"), (unknown_clip, "unknown")):
        result = classifier(str(data / row["video_path"]), top_k=3)
        shown = ", ".join(f"{r['label']} {r['score']:.2f}" for r in result)
        report(f"{kind} clip ({row['label']}): {shown}")

    if importlib.util.find_spec("cv2") is None:  # the face extra: a `make demo` checkout has it, a wheel may not
        logger.info('5/5 raw footage: skipped, face cropping needs the face extra (pip install "hesp-hf[face]")')
    else:
        logger.info(
            "5/5 raw footage: the same test faces in cluttered scenes, classified whole and with face_crop=True"
        )
        scene_metrics = evaluate_in_scenes(args, spec, metrics)
        scene_clip = scene_metrics.pop("clip")
        cropping = HESPVideoProcessor.from_pretrained(args.output_dir, face_crop=True, **DEMO_FACE_SETTINGS)
        classifier = pipeline("video-classification", model=str(args.output_dir), video_processor=cropping)
        result = classifier(str(scene_clip["path"]), top_k=3)
        shown = ", ".join(f"{r['label']} {r['score']:.2f}" for r in result)
        report(f"a {scene_clip['label']} clip in a scene, face_crop=True: {shown}")
    report(f"\n(total {time.perf_counter() - start:.0f} s; serve the model with `hesp-app` from this folder)")
    report(f"demo: accuracy={metrics['accuracy']:.4f} auroc={metrics['auroc']:.4f} oscr={metrics['oscr']:.4f}")


def evaluate_in_scenes(args: argparse.Namespace, spec: SyntheticSpec, centred: dict) -> dict:
    """The test clips with each face placed off-centre in a cluttered 256x144 scene, evaluated as
    hesp-evaluate does (in this process) whole and with `--face_crop`, and cropped at the true face
    tiles; prints the results side by side."""
    scenes = write_synthetic_dataset(args.data_dir, replace(spec, train_per_class=0, scene_height=144))
    results = {"centred clips (as trained)": centred}
    for face_crop in (False, True):
        name = "scenes, face_crop=True" if face_crop else "scenes, whole frame"
        results[name] = evaluate_checkpoint(
            EvaluationArguments(
                checkpoint=str(args.output_dir),
                output_dir=str(args.output_dir / ("scenes-face-crop" if face_crop else "scenes-whole")),
            ),
            DataArguments(
                dataset="custom",
                class_names=list(CLASSES),
                test_annotation=str(scenes / "test.csv"),
                face_crop=face_crop,
                **(DEMO_FACE_SETTINGS if face_crop else {}),
            ),
        )
    results["scenes, cropped at the true face tile (no detector)"] = evaluate_at_true_boxes(args.output_dir, scenes)
    header = ["test clips", "accuracy", "AUROC", "OSCR", "clips without a face"]
    rows = [
        [
            name,
            *(f"{found[m]:.4f}" for m in ("accuracy", "auroc", "oscr")),
            str(found.get("no_face_clips", {}).get("test", "")),
        ]
        for name, found in results.items()
    ]
    report("\n" + markdown_table(header, rows))
    with (scenes / "test.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["label"] == DEMO_KNOWN[1])
    return {"clip": {"path": scenes / row["video_path"], "label": row["label"]}}


def evaluate_at_true_boxes(checkpoint: Path, scenes: Path) -> dict:
    """The scene test clips cropped at the tile each face was rendered in (`test_faces.json`), not at a detected box:
    the framing the model was trained on, so what no face detector can beat. A face detector frames the drawn face
    itself, whose size and place in its tile vary per identity and pose, and this tiny backbone is very sensitive to
    framing; the gap between this row and the face_crop row is that framing, the gap to the centred row is encoding."""
    model, processor = load_pair(str(checkpoint))
    to_model_input = ClipTransform(processor, training=False).process  # the data path's frames -> model input
    true_boxes = json.loads((scenes / "test_faces.json").read_text())
    known = model.config.known_labels
    with (scenes / "test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    pixels, labels = [], []
    for row in rows:
        clip = sample_clip(str(scenes / row["video_path"]), processor.num_frames)
        tiles = np.asarray(true_boxes[row["video_path"]], dtype=float)  # one box per written frame
        frame_index = np.clip(np.round(np.asarray(clip.timestamps) * CLIP_FPS).astype(int), 0, len(tiles) - 1)
        crops = crop_frames(np.asarray(clip.frames), tiles[frame_index], processor.crop_size.height)
        pixels.append(to_model_input(crops))
        labels.append(known.index(row["label"]) if row["label"] in known else UNKNOWN_LABEL_ID)
    with torch.no_grad():
        logits = model(pixel_values_videos=torch.stack(pixels)).logits
    return open_set_metrics(
        uncalibrated_logits(logits.numpy(), model.config),
        np.asarray(labels),
        score=model.config.open_set_score,
        has_unknown_column=True,
    )


def cli() -> None:
    """The `hesp-demo` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
