"""Predict every clip of a folder, glob, list file or CSV with a trained HESP checkpoint: one row per clip.

    hesp-predict --checkpoint runs/dfew-1 --output predictions.jsonl recordings/
    hesp-predict --checkpoint org/hesp-dfew --output screen.csv "archive/**/*.mp4" --face_crop --bf16
    hesp-predict --checkpoint runs/dfew-1 --precision bf16 ...   # bfloat16 tower: CPUs with AVX512-BF16 / AMX, GPUs
    hesp-predict --checkpoint runs/dfew-1-int8 ...               # an int8 export (hesp-export --int8)
    accelerate launch --num_processes 4 scripts/predict.py --checkpoint runs/dfew-1 --output all.jsonl clips.txt
    hesp-predict --checkpoint runs/dfew-1 --output people.csv groups/ --faces all --thumbnails faces/

Each row: the file, its top label (or the checkpoint's unknown label), whether that is a known expression, the
known-ness score and the threshold it is compared with, the per-class probabilities over the known classes, and
the error for a file that could not be read (never fatal). `.jsonl` or `.csv` by the output's suffix. Running again
on the same output skips the clips already there (an interrupted run keeps every finished batch). Under
`accelerate launch` each process takes its share of the clips and one output is merged. With --faces all, one row
per person per clip (`person`: person-1, ... in order of appearance; `frames_on_screen`; `thumbnail` with
--thumbnails), in one process.
"""

import argparse
import logging
from typing import Any

from hesp_hf.atomic_files import check_output_folder
from hesp_hf.commands.cli import ArgumentParser, run_command
from hesp_hf.inference import onnx_runtime
from hesp_hf.inference.deployment import PRECISIONS, load_for_prediction


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="video files, folders, glob patterns, list files (.txt) or CSVs")
    parser.add_argument("--dataset_name", help="instead of inputs: a datasets Hub id, folder or builder (videofolder)")
    parser.add_argument("--dataset_config_name", default=None, help="--dataset_name: its configuration")
    parser.add_argument("--data_dir", default=None, help="--dataset_name builder: the data folder")
    parser.add_argument("--data_files", nargs="*", default=None, help="--dataset_name builder: split=path items")
    parser.add_argument("--split", default="test", help="--dataset_name: the split to label (default test)")
    parser.add_argument("--video_column_name", default="video", help="--dataset_name: the video column")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a trained HESP folder or Hub id, or an ONNX or int8 export folder (hesp-export)",
    )
    parser.add_argument("--output", required=True, help="where the rows go: a .jsonl or .csv file")
    parser.add_argument("--root", default=None, help="folder that relative paths in list files and CSVs start from")
    parser.add_argument("--batch_size", type=int, default=8, help="clips per forward pass (default 8)")
    parser.add_argument(
        "--num_workers", type=int, default=None, help="decoding processes (default: the cores left after the model)"
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: the image tower's weights in bfloat16, the head in float32 (fastest where the CPU or GPU "
        "computes bf16 natively)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the image tower (compiles once)")
    parser.add_argument("--face_crop", action="store_true", help="crop every clip to its face first (raw footage)")
    parser.add_argument(
        "--faces",
        default=None,
        help="'all': one row per person per clip (each face followed through the clip); 'largest': --face_crop",
    )
    parser.add_argument("--max_faces", type=int, default=8, help="--faces all: the largest faces per frame")
    parser.add_argument("--thumbnails", default=None, help="--faces all: a folder for each person's face (PNG)")
    parser.add_argument(
        "--inference_only",
        action="store_true",
        help="drop the text side after loading (hesp_hf.export): less memory, the same rows",
    )
    parser.add_argument(
        "--known_acceptance",
        type=float,
        default=None,
        help="re-decide at this split conformal level from the checkpoint's saved calibration scores, without "
        "retraining: a known clip is accepted with at least this probability (default: the level it was trained at)",
    )
    parser.add_argument("--no_resume", action="store_true", help="predict again the clips already in --output")
    parser.add_argument(
        "--no_describe_unknown",
        action="store_true",
        help="leave out closest_expression / closest_description (the expression outside the model's classes whose "
        "facial-action description lies closest to a clip decided unknown; needs the checkpoint's tokenizer)",
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is available")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num_workers must be >= 0, got {args.num_workers}")
    if not args.output.lower().endswith((".jsonl", ".csv")):
        parser.error(f"--output must end in .jsonl or .csv, got {args.output}")
    if args.thumbnails is not None:
        check_output_folder(args.thumbnails, "--thumbnails")
    if args.known_acceptance is not None:  # the level itself, before anything loads; n is checked with the model
        from hesp_hf.calibration import check_level

        check_level(args.known_acceptance, name="--known_acceptance")

    from accelerate import PartialState

    state = PartialState(cpu=args.cpu)  # the process group and the device, before the model is loaded
    if args.faces is not None:
        from hesp_hf.commands.timeline import faces_option

        args.face_crop, args.min_track_s = args.face_crop or args.faces == "largest", 0.0
        faces_option(parser, args)
        if args.faces == "all" and state.num_processes > 1:
            parser.error("--faces all runs in one process (not under accelerate launch --num_processes > 1)")

    from hesp_hf.inference.background import default_num_workers, model_threads
    from hesp_hf.inference.clips import list_clips
    from hesp_hf.inference.prediction import predict_clips

    if bool(args.inputs) == bool(args.dataset_name):
        parser.error("give the clips as inputs or with --dataset_name, one of the two")
    if args.dataset_name:
        from hesp_hf.data.hf_datasets import DatasetSource, dataset_clip_paths

        source = DatasetSource(
            name=args.dataset_name,
            config_name=args.dataset_config_name,
            data_dir=args.data_dir,
            data_files=tuple(args.data_files) if args.data_files else None,
            video_column=args.video_column_name,
            label_column=args.video_column_name,  # labels are not read: the checkpoint predicts them
            data_root=args.root,
        )
        clips = dataset_clip_paths(source, args.split)
    else:
        clips = list_clips(args.inputs, root=args.root)
    if args.num_workers is None:
        args.num_workers = default_num_workers(state.num_processes)
    if onnx_runtime.is_onnx_export(args.checkpoint) and (args.precision != "fp32" or args.compile):
        parser.error("--precision and --compile apply to PyTorch checkpoints; an export's precision is its graph's")
    model, processor = load_for_prediction(
        args.checkpoint,
        precision=args.precision,
        inference_only=args.inference_only and not onnx_runtime.is_onnx_export(args.checkpoint),
        compile=args.compile,
        threads=model_threads(args.num_workers, state.num_processes),
        spinning=False,  # decoding shares the CPU cores: idle model threads must not busy-wait on them
    )
    state_guarantee(model.config, args.checkpoint, args.known_acceptance)
    describer = None if args.no_describe_unknown else unknown_describer(model, args.checkpoint)
    if args.face_crop:
        processor.face_crop = True
    if args.faces == "all":
        from hesp_hf.inference.prediction_people import predict_people

        if hasattr(model, "to"):
            model = model.to(state.device).eval()
        predict_people(
            model,
            processor,
            clips,
            args.output,
            max_faces=args.max_faces,
            thumbnails=args.thumbnails,
            bf16=args.bf16,
            resume=not args.no_resume,
        )
        return
    rows, summary = predict_clips(
        model,
        processor,
        clips,
        args.output,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        bf16=args.bf16,
        resume=not args.no_resume,
        progress=not args.no_progress,
        describer=describer,
    )
    if rows and summary.failures == len(rows):  # a setup problem, not a few bad files: say so with the exit status
        raise ValueError(
            f"none of the {len(rows)} clips could be read (rows with their errors in {args.output}); the first, "
            f"{rows[0]['file']}: {rows[0]['error']}"
        )


def state_guarantee(config: Any, checkpoint: str, acceptance: float | None) -> None:
    """Move the threshold to `--known_acceptance` when given (one-line error when the saved scores cannot), then
    say in the log what the decisions guarantee, or that this checkpoint carries no guarantee."""
    from hesp_hf.calibration import guarantee_statement, has_guarantee, redecide

    if acceptance is not None:
        redecide(config, acceptance, source=checkpoint, name="--known_acceptance")
    say = logging.info if has_guarantee(config) else logging.warning
    say("%s", guarantee_statement(config, source=checkpoint))


def unknown_describer(model: Any, checkpoint: str) -> Any:
    """The scorer that names what an unknown clip looks closest to, where the model can read text: a full PyTorch
    checkpoint (not ONNX, not inference-only) with its tokenizer; else None, said in the log."""
    from transformers import AutoTokenizer

    from hesp_hf.inference.zero_shot import CandidateScorer

    if onnx_runtime.is_onnx_export(checkpoint) or model.config.inference_only:
        logging.info("No closest_description column: this model has no text tower (ONNX or inference-only).")
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError):
        logging.info("No closest_description column: %s holds no tokenizer.", checkpoint)
        return None
    return CandidateScorer(model, tokenizer)


def cli() -> None:
    """The `hesp-predict` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
