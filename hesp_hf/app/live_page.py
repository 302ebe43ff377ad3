"""The app's Live page: the webcam streamed through Gradio, the current decision and probabilities, the face crop, a
rolling timeline of the last minute, and at the end of the session its timeline and WebVTT captions to download.

The browser sends a frame every sampling step of the timeline (`window / num_frames` seconds); each browser
session keeps its own `LiveSession` (in Gradio's per-session state, dropped after `keep_results_s` without use).
"""

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from .live_session import RECENT_S, LiveSession


logger = logging.getLogger(__name__)

WAITING = "Start the webcam (the record button under it): decisions appear once the first window is in."

WHOLE_FRAME = "whole frame"
# The Faces choices and what `LiveSession(faces=...)` gets for each.
FACE_CHOICES = {WHOLE_FRAME: None, "one person (crop to the face)": "largest", "every person": "all"}


def build_live_page(model: Any, processor: Any, settings: Any) -> None:
    """The Live page's components and events, inside the caller's `page.route(...)` context. `settings`: the app's
    `PageSettings` (window, stride, concurrency, how long results are kept)."""
    known = list(model.config.known_labels)
    step = settings.window_s / int(processor.num_frames)
    gr.Markdown(
        f"# Live\nThe webcam's picture is decided every {settings.stride_s:g} s over the last {settings.window_s:g} s, "
        "as `hesp-timeline --live` decides a stream. **End the session** to get its timeline and captions."
    )
    session = gr.State(None, time_to_live=settings.keep_results_s)
    with gr.Row():
        with gr.Column(scale=1):
            webcam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy", elem_id="live-webcam")
            faces = gr.Radio(
                list(FACE_CHOICES),
                value=WHOLE_FRAME,
                label="Faces (set before starting)",
                info="every person: a decision and a lane each, ids kept while they are in view",
                elem_id="live-faces",
            )
            end = gr.Button("End the session", variant="primary", elem_id="live-end")
        with gr.Column(scale=1):
            status = gr.Markdown(WAITING, elem_id="live-status")
            decision = gr.Markdown(elem_id="live-decision")
            probabilities = gr.Label(label="Probabilities", num_top_classes=len(known), show_heading=False)
            face = gr.Image(  # shown once a session crops to the face
                label="Face crop", type="numpy", interactive=False, height=160, visible=False, elem_id="live-face"
            )
    recent = gr.ScatterPlot(
        x="centre (s)",
        y="known-ness",
        color="decision",
        label=f"The last {RECENT_S:.0f} s",
        height=220,
        elem_id="live-timeline",
    )
    final = gr.Image(label="The session's timeline", type="filepath", interactive=False, elem_id="live-final")
    files = gr.File(label="The session's files", file_count="multiple", interactive=False, elem_id="live-files")

    def on_frame(image: np.ndarray | None, current: LiveSession | None, choice: str) -> tuple[Any, ...]:
        if image is None:
            return current, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if current is None:
            current = LiveSession(
                model, processor, settings.window_s, settings.stride_s, faces=FACE_CHOICES.get(choice)
            )
        decided = current.add_frame(image)
        if not decided:
            return current, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        latest = decided[-1]
        return (
            current,
            f"Live: {current.seconds:.1f} s, {len(current.windows)} windows.",
            "\n\n".join(window_text(w) for w in latest_per_person(decided)),
            dict(latest.probabilities) if latest.probabilities else None,
            gr.update(value=face_crop_of(current.latest, latest.face_box), visible=current.face_crop),
            recent_table(current),
        )

    webcam.stream(
        on_frame,
        inputs=[webcam, session, faces],
        outputs=[session, status, decision, probabilities, face, recent],
        stream_every=step,
        show_progress="hidden",
        api_name="live_frame",
    )

    def on_end(current: LiveSession | None) -> Iterator[tuple[Any, ...]]:
        if current is None or not current.windows:
            yield None, "No window decided yet: start the webcam and wait a moment.", gr.skip(), gr.skip()
            return
        folder = Path(tempfile.mkdtemp(prefix="hesp-live-"))
        try:
            summary = current.finish(folder, "webcam")
            shares = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(summary["seconds_per_decision"].items()))
            text = f"Session ended: {summary['duration']:.1f} s, {summary['windows']} windows ({shares})."
            listed = [str(folder / name) for name in summary["files"]] + [str(folder / "summary.json")]
            # Gradio copies the files into its cache before the generator resumes: the folder can go then.
            yield None, text, str(folder / "timeline.png"), listed
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    end.click(on_end, inputs=[session], outputs=[session, status, final, files], api_name="live_end")


def window_text(window: Any) -> str:
    """A window's decision in words (as the upload page words a clip's), with its person when faces are followed."""
    span = f"{window.start:.1f}-{window.end:.1f} s"
    who = "" if window.person is None else f"{window.person}: "
    if window.status != "ok":
        return f"## {who}{window.decision}\n{span}: no decision ({window.status.replace('_', ' ')})."
    threshold = "" if window.threshold is None else f" against threshold {window.threshold:.3f}"
    return f"## {who}{window.label}\n{span}: known-ness {window.score:.3f}{threshold}."


def latest_per_person(windows: list[Any]) -> list[Any]:
    """The last of `windows` of each person (one window without faces followed), in order of the person's id."""
    latest = {window.person: window for window in windows}
    return [latest[person] for person in sorted(latest, key=lambda p: (p is not None, str(p)))]


def face_crop_of(image: np.ndarray | None, box: list[float] | None) -> np.ndarray | None:
    """The face square of `box` (frame pixels) cut from `image`; None without a box."""
    if image is None or box is None:
        return None
    height, width = image.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(round(box[2]))), min(height, int(round(box[3])))
    return image[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else None


def recent_table(session: LiveSession) -> Any:
    """The last minute's windows for the rolling plot: centre time, known-ness (0 for a window without a score),
    decision."""
    import pandas as pd

    rows = [
        {
            "centre (s)": round((w.start + w.end) / 2, 3),
            "known-ness": w.score or 0.0,
            "decision": w.decision if w.person is None else f"{w.person}: {w.decision}",
        }
        for w in session.recent()
    ]
    return pd.DataFrame(rows, columns=["centre (s)", "known-ness", "decision"])
