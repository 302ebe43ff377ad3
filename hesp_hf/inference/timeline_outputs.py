"""A timeline's files: the windows (JSONL, CSV), the segments (JSONL, CSV), WebVTT captions that a video player shows
beside the recording, a PNG (decisions over time above the known-ness curve and its threshold), and `summary.json`;
following people, a lane per person in the PNG, voice tags in the captions and a face thumbnail per person.

Every file is written whole or not at all, and `summary.json` last: a folder with it is complete, which is what lets
an interrupted run over many recordings resume (`finished`).
"""

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic_files import atomic_output, write_text_atomic
from .timeline import ABSENT, NO_FACE, UNREADABLE, Timeline, TimelineSegment


SUMMARY_FILE = "summary.json"


def timeline_files(stem: str) -> list[str]:
    """The files a recording's timeline writes before its summary (besides each person's thumbnail)."""
    return ["windows.jsonl", "windows.csv", "segments.jsonl", "segments.csv", f"{stem}.vtt", "timeline.png"]


def write_timeline(result: Timeline, folder: str | Path, stem: str, settings: dict[str, Any] | None = None) -> dict:
    """Write every file of `result` into `folder` (`stem` names the captions, so that `<stem>.vtt` can sit beside
    `<stem>.mp4`); `settings` (checkpoint, options) go into the summary for `finished` to compare. Returns the
    summary, with the files written."""
    folder = Path(folder)
    windows = [window.to_json() for window in result.windows]
    segments = [segment.to_json() for segment in result.segments]
    _write_jsonl(folder / "windows.jsonl", windows)
    fields = (["person"] if result.faces is not None else []) + _window_fields(result.labels)
    _write_csv(folder / "windows.csv", windows, fields, flatten="probabilities")
    _write_jsonl(folder / "segments.jsonl", segments)
    _write_csv(folder / "segments.csv", segments, list(segments[0]) if segments else ["start", "end", "decision"])
    write_text_atomic(folder / f"{stem}.vtt", webvtt(result.segments))
    plot_path = folder / "timeline.png"
    with atomic_output(plot_path) as temporary:
        figure = plot_timeline(result)
        figure.savefig(temporary, dpi=110)
        import matplotlib.pyplot as plt

        plt.close(figure)
    thumbnails = write_thumbnails(result, folder)
    summary = {**result.summary(), "settings": settings or {}}
    for person, name in thumbnails.items():
        summary["people"][person]["thumbnail"] = name
    summary["files"] = sorted(timeline_files(stem) + list(thumbnails.values()))
    write_text_atomic(folder / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def finished(folder: str | Path, settings: dict[str, Any]) -> bool:
    """Whether `folder` holds a complete timeline made with the same `settings`."""
    path = Path(folder) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return summary.get("settings") == json.loads(json.dumps(settings)) and all(
        (Path(folder) / name).is_file() for name in summary.get("files", [])
    )


def write_thumbnails(result: Timeline, folder: Path) -> dict[str, str]:
    """Each followed person's clearest face crop as `<person>.png`, so that the user sees who is who."""
    from PIL import Image

    written = {}
    for person in result.people:
        if person.thumbnail is None:
            continue
        name = f"{person.id}.png"
        with atomic_output(folder / name) as temporary:
            Image.fromarray(person.thumbnail).save(temporary, format="PNG")
        written[person.id] = name
    return written


def webvtt(segments: Sequence[TimelineSegment]) -> str:
    """WebVTT captions: one cue per segment, the decision and its mean known-ness; a person's segments carry a
    voice tag (`<v person-1>happiness · known-ness 12.10</v>`), in time order, and their absences have no cue."""
    lines = ["WEBVTT", ""]
    shown = sorted(
        (s for s in segments if not (s.person is not None and s.decision == ABSENT)),
        key=lambda s: (s.start, s.person or ""),
    )
    for number, segment in enumerate(shown, start=1):
        text = _caption(segment)
        if segment.person is not None:
            text = f"<v {segment.person}>{text}</v>"
        lines += [str(number), f"{_vtt_time(segment.start)} --> {_vtt_time(segment.end)}", text, ""]
    return "\n".join(lines)


def _caption(segment: TimelineSegment) -> str:
    if segment.decision == NO_FACE:
        return "(no face)"
    if segment.decision == UNREADABLE:
        return "(unreadable video)"
    if segment.decision == ABSENT:
        return "(absent)"
    score = "" if segment.mean_score is None else f" · known-ness {segment.mean_score:.2f}"
    return f"{segment.decision}{score}"


def _vtt_time(seconds: float) -> str:
    milliseconds = int(round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def plot_timeline(result: Timeline) -> Any:
    """A matplotlib figure: a decision band (one colour per known class, grey for unknown, hatched for no face,
    black for unreadable, white for absent) per person followed, each with the person's face, above each window's
    known-ness at its centre (a line per person) with the threshold line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(result.labels)}
    colours[result.unknown_label] = (0.62, 0.62, 0.62, 1.0)
    colours[NO_FACE] = colours[ABSENT] = (1.0, 1.0, 1.0, 1.0)
    colours[UNREADABLE] = (0.0, 0.0, 0.0, 1.0)
    lanes = [person.id for person in result.people] or [None]
    faces = {person.id: person.thumbnail for person in result.people}
    figure, axes = plt.subplots(
        len(lanes) + 1,
        1,
        figsize=(10, 2.4 + 1.0 * len(lanes)),
        sharex=True,
        gridspec_kw={"height_ratios": [1] * len(lanes) + [2]},
        constrained_layout=True,
    )
    shown: list[str] = []
    for lane, band in zip(lanes, axes[:-1], strict=True):
        for segment in result.segments:
            if segment.person != lane:
                continue
            band.axvspan(
                segment.start,
                segment.end,
                facecolor=colours.get(segment.decision, (0.5, 0.5, 0.5, 1.0)),
                hatch="//" if segment.decision == NO_FACE else None,
                edgecolor="0.4" if segment.decision == NO_FACE else None,
                linewidth=0,
            )
            if segment.decision not in shown:
                shown.append(segment.decision)
        band.set_yticks([])
        if lane is not None and faces.get(lane) is not None:  # the person's face, their id above it
            inset = band.inset_axes((-0.075, 0.0, 0.06, 0.8), transform=band.transAxes)
            inset.imshow(faces[lane])
            inset.set_axis_off()
            inset.set_title(lane, fontsize=7, pad=2)
        elif lane is not None:
            band.set_ylabel(lane, fontsize=8, rotation=0, ha="right", va="center")
    axes[0].set_title(Path(result.file).name, fontsize=9, loc="left")
    axes[0].legend(
        handles=[
            Patch(facecolor=colours.get(d, "0.5"), hatch="//" if d == NO_FACE else None, edgecolor="0.4", label=d)
            for d in shown
        ],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=7,
        frameon=False,
    )
    curve = axes[-1]
    for number, lane in enumerate(lanes):  # a break where the person has no decision (absent, no face)
        own = [w for w in result.windows if w.person == lane]
        centres = [(w.start + w.end) / 2 for w in own]
        scores = [float("nan") if w.score is None else w.score for w in own]
        curve.plot(centres, scores, lw=1.0, color=f"C{number}", label=lane if lane is not None else None)
    decided = [w for w in result.windows if w.score is not None]
    threshold = next((w.threshold for w in decided if w.threshold is not None), None)
    if threshold is not None:
        curve.axhline(threshold, color="C3", ls="--", lw=1.0, label=f"threshold {threshold:.3g}")
    if threshold is not None or result.people:
        curve.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    curve.set_ylabel("known-ness", fontsize=8)
    curve.set_xlabel("time (s)", fontsize=8)
    curve.set_xlim(0, max(result.duration, 1e-3))
    return figure


def _window_fields(labels: Sequence[str]) -> list[str]:
    base = ["start", "end", "status", "label", "known", "score", "threshold", "known_p_value", "face_box"]
    return base + [f"p_{label}" for label in labels]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_output(path) as temporary, temporary.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str], flatten: str | None = None) -> None:
    with atomic_output(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            flat = dict(row)
            if flatten:
                flat.update({f"p_{key}": value for key, value in (row.get(flatten) or {}).items()})
            if flat.get("face_box") is not None:
                flat["face_box"] = " ".join(str(v) for v in flat["face_box"])
            writer.writerow({key: "" if value is None else value for key, value in flat.items()})
