"""`hesp-timeline --live SOURCE`: the timeline of a live stream, each window shown and appended to `windows.jsonl` as
soon as it is decided, every other file written when the stream ends (end of input, a stall past
--stall_timeout_s, a broken stream, Ctrl-C or SIGTERM). Called by `hesp_hf.commands.timeline`."""

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hesp_hf.inference.live import LiveTimeline, LiveWindow, record_live


logger = logging.getLogger("hesp-timeline")


def run_live(args: argparse.Namespace, model: Any, processor: Any) -> dict[str, Any]:
    """Open `args.live`, run it into `args.output/live-<UTC time>/` and return the summary."""
    live = LiveTimeline(
        model,
        processor,
        args.live,
        window=args.window_s,
        stride=args.stride_s,
        faces=args.faces,
        min_track_s=args.min_track_s,
        max_faces=args.max_faces,
        bf16=args.bf16,
        batch_size=args.batch_size,
        stall_timeout_s=args.stall_timeout_s,
        max_queue_frames=args.max_queue_frames,
        input_format=args.input_format,
    )
    name = time.strftime("live-%Y%m%d-%H%M%S", time.gmtime())
    folder = Path(args.output) / name
    settings = {
        "checkpoint": str(Path(args.checkpoint).resolve()) if Path(args.checkpoint).exists() else args.checkpoint,
        "live": live.source,
        "window_s": args.window_s,
        "stride_s": args.stride_s,
        "faces": args.faces,
        "bf16": args.bf16,
        "precision": args.precision,
        "max_queue_frames": live.frames.capacity,
        "stall_timeout_s": args.stall_timeout_s,
    }
    logger.info(
        "%s: live, rows in %s (Ctrl-C ends the run and writes the files)", live.source, folder / "windows.jsonl"
    )
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: int, _frame: Any) -> None:
        logger.info("%s: ending the run (%s)", live.source, signal.Signals(signum).name)
        live.stop()
        signal.signal(signum, previous[signum])  # a second signal acts at once

    for sig in previous:
        signal.signal(sig, stop)
    try:
        summary = record_live(live, folder, name, settings, on_window=_show)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    info = summary["live"]
    latency = info["latency_s"]
    logger.info(
        "%s: ended (%s) after %.1f s: %d windows, %d of %d sampled frames dropped, latency median %s s, p95 %s s -> %s",
        live.source,
        info["ended"],
        summary["duration"],
        summary["windows"],
        info["dropped_frames"],
        info["sampled_frames"],
        latency["median"],
        latency["p95"],
        folder,
    )
    return summary


def _show(window: LiveWindow) -> None:
    """One terminal line per window: when, whose (with --faces), the decision, known-ness against the threshold,
    latency, drops."""
    who = "" if window.person is None else f"  {window.person:<9}"
    text = f"{window.start:8.2f}-{window.end:8.2f} s{who}  {window.decision:<14}"
    if window.score is not None:
        threshold = "" if window.threshold is None else f" (threshold {window.threshold:.2f})"
        text += f" known-ness {window.score:6.2f}{threshold}"
    if window.latency_s is not None:
        text += f"  latency {window.latency_s:.2f} s"
    if window.dropped_frames:
        text += f"  {window.dropped_frames} frames dropped"
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
