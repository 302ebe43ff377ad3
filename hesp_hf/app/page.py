"""The app's page (Gradio Blocks): a video from a file or the webcam in, the decision, the probabilities, the frames
the model saw, a longer video's timeline and the result files out.

    page = build_page(model, processor, settings=PageSettings(concurrency=2))
    launch(page, settings)  # or page.launch(...) yourself

Requests wait in Gradio's queue and at most `concurrency` run at once. Uploads are deleted shortly after their
request ends (`UploadJanitor`); the result files live in Gradio's cache until `keep_results_s` has passed (time for
the download) and go when the server stops. An upload that cannot be analysed, or any failure, gives one line in the
page's status, never a stack trace.
"""

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ..calibration import guarantee_statement
from ..inference.timeline import check_window_stride
from ..modeling.provenance_hesp import DRAWN_FACES_NOTICE, learned_drawn_faces
from .analysis import Analysis, RequestProblem, analyse_video
from .live_page import build_live_page


logger = logging.getLogger(__name__)

TITLE = "Facial expression recognition (HESP)"


@dataclass
class PageSettings:
    """How the page runs. `max_file_size`: Gradio's upload limit ("50mb", a number of bytes, or None: none);
    `window_s` / `stride_s`: the timeline of a video longer than one window; `upload_grace_s`: how soon after
    their request uploads are deleted (`UploadJanitor`)."""

    concurrency: int = 2
    max_file_size: str | int | None = "200mb"
    keep_results_s: int = 600
    window_s: float = 2.0
    stride_s: float = 0.5
    checkpoint: str = ""
    upload_grace_s: float | None = None  # None: 30 s, or keep_results_s when that is shorter

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}.")
        if self.keep_results_s < 1:
            raise ValueError(f"keep_results_s must be >= 1 second, got {self.keep_results_s}.")
        if self.upload_grace_s is None:
            self.upload_grace_s = min(30.0, float(self.keep_results_s))
        if not 0 < self.upload_grace_s <= self.keep_results_s:
            raise ValueError(
                f"upload_grace_s must be > 0 and <= keep_results_s ({self.keep_results_s}), got {self.upload_grace_s}."
            )
        check_window_stride(self.window_s, self.stride_s, names=("window_s", "stride_s"))


class RequestCounter:
    """Requests in flight now and at most so far (what the queue's concurrency limit bounds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.peak = self.answered = 0

    def __enter__(self) -> "RequestCounter":
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *_: Any) -> None:
        with self._lock:
            self.now -= 1
            self.answered += 1


class UploadJanitor:
    """Deletes each upload soon after the last request that read it. Gradio keeps one file per content (in a folder
    named by its hash), so people who upload the same video share one path, and an upload reaches the server before
    its request joins the queue. A path is therefore deleted `grace_s` after a request that read it ends, once no
    request holding it runs, none waits in the queue and nobody uploaded it again within `grace_s`; else it is
    tried again `grace_s` later. `delete_cache` and the server's stop remove anything left. Paths outside Gradio's
    upload folder (a script's own files) are left alone."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.page: gr.Blocks | None = None
        self._lock = threading.Lock()
        self._running: dict[Path, int] = {}
        self._done: set[Path] = set()

    def hold(self, uploaded: str | None) -> None:
        path = self._upload_path(uploaded)
        if path is not None:
            with self._lock:
                self._running[path] = self._running.get(path, 0) + 1

    def release(self, uploaded: str | None) -> None:
        path = self._upload_path(uploaded)
        if path is None:
            return
        with self._lock:
            self._running[path] -= 1
            if not self._running[path]:
                del self._running[path]
            self._done.add(path)
        self._later()

    def sweep(self) -> None:
        """Delete the finished uploads that nobody can still need; try the others again later."""
        with self._lock:
            if self._requests_waiting():
                left = bool(self._done)
            else:
                for path in list(self._done):
                    if path in self._running:
                        continue
                    try:
                        if time.time() - path.stat().st_ctime < self.grace_s:
                            continue  # uploaded again a moment ago: its request may be on its way
                        path.unlink()
                        path.parent.rmdir()
                    except OSError:  # gone already, or the folder holds more
                        pass
                    self._done.discard(path)
                left = bool(self._done - set(self._running))
        if left:
            self._later()

    def _later(self) -> None:
        timer = threading.Timer(self.grace_s, self.sweep)
        timer.daemon = True
        timer.start()

    def _upload_path(self, uploaded: str | None) -> Path | None:
        if not uploaded or self.page is None:
            return None
        path = Path(uploaded).resolve()
        return path if Path(self.page.GRADIO_CACHE).resolve() in path.parents else None

    def _requests_waiting(self) -> int:
        try:
            return len(self.page._queue)  # type: ignore[union-attr] -- events waiting for a worker
        except Exception:  # noqa: BLE001 -- unknown: assume some wait, and leave the file to delete_cache
            return 1


def build_page(model: Any, processor: Any, settings: PageSettings | None = None, describer: Any = None) -> gr.Blocks:
    """The page for `model` and its `processor`; `describer` (a `CandidateScorer`, or None) names what an unknown
    clip looks closest to. The queue is set up; `launch` starts it."""
    settings = settings or PageSettings()
    config = model.config
    known = list(config.known_labels)
    counter = RequestCounter()
    janitor = UploadJanitor(settings.upload_grace_s)

    with gr.Blocks(
        title=TITLE,
        analytics_enabled=False,
        delete_cache=(max(1, min(60, settings.keep_results_s)), settings.keep_results_s),
    ) as page:
        gr.Markdown(_introduction(known, config, settings))
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Video", sources=["upload", "webcam"])  # audio kept: dropping it needs ffmpeg
                face_crop = gr.Checkbox(
                    label="Crop to the face first (raw footage: webcam, phone, a face that fills little of the frame)",
                    value=False,
                )
                everyone = gr.Checkbox(
                    label="Every person: a decision and a timeline lane per person (several people in the video)",
                    value=False,
                )
                button = gr.Button("Analyse", variant="primary")
            with gr.Column(scale=1):
                if learned_drawn_faces(config, settings.checkpoint):  # the demo model: said above every result
                    gr.Markdown(f"**Notice:** {DRAWN_FACES_NOTICE}", elem_id="drawn-faces-notice")
                status = gr.Markdown("Upload a video or record one, then press **Analyse**.", elem_id="status")
                decision = gr.Markdown(elem_id="decision")
                probabilities = gr.Label(
                    label="Probabilities over the known expressions", num_top_classes=len(known), show_heading=False
                )
        crops = gr.Gallery(label="The frames the model saw", columns=8, rows=1, height=200, elem_id="crops")
        people = gr.Gallery(label="People", columns=8, rows=1, height=160, visible=False, elem_id="people")
        plot = gr.Image(label="Timeline", type="filepath", visible=False, elem_id="timeline", interactive=False)
        segments = gr.Dataframe(
            headers=["start (s)", "end (s)", "decision", "mean known-ness"],
            visible=False,
            interactive=False,
            label="Segments",
        )
        files = gr.File(label="Results (JSON, WebVTT captions)", file_count="multiple", interactive=False)

        def run(uploaded: str | None, crop: bool, every: bool = False) -> Iterator[tuple[Any, ...]]:
            # A generator: Gradio copies the yielded files into its cache (which `delete_cache` empties) before
            # asking for more, so the code after the yield can delete the upload and this request's own folder (in
            # the system's temp folder, outside that cache: files inside it would be served from where they are).
            folder = Path(tempfile.mkdtemp(prefix="hesp-app-"))
            janitor.hold(uploaded)
            with counter:
                try:
                    yield _answer(uploaded, crop, folder, every)
                finally:
                    janitor.release(uploaded)
                    shutil.rmtree(folder, ignore_errors=True)

        def _answer(uploaded: str | None, crop: bool, folder: Path, every: bool = False) -> tuple[Any, ...]:
            if not uploaded:
                limit = f" (uploads are limited to {settings.max_file_size})" if settings.max_file_size else ""
                return _problem(f"No video received{limit}: upload a video file or record one.")
            name = Path(uploaded).name
            try:
                result = analyse_video(
                    model,
                    processor,
                    uploaded,
                    folder,
                    name=name,
                    face_crop=crop,
                    describer=describer,
                    window=settings.window_s,
                    stride=settings.stride_s,
                    faces="all" if every else None,
                )
            except RequestProblem as problem:
                logger.info("%s", problem)
                return _problem(str(problem))
            except Exception as error:  # noqa: BLE001 -- the page gets one line; the log keeps the trace
                logger.exception("Analysis of %s failed", name)
                return _problem(
                    f"{name} could not be analysed ({type(error).__name__}: {' '.join(str(error).split())})."
                )
            return _shown(result, folder)

        button.click(
            run,
            inputs=[video, face_crop, everyone],
            outputs=[status, decision, probabilities, crops, plot, segments, people, files],
            api_name="analyse",
        )
    with page.route("Live", "live"):  # the webcam, decided as it plays (`hesp_hf.app.live_page`)
        build_live_page(model, processor, settings)
    page.queue(default_concurrency_limit=settings.concurrency)
    janitor.page = page
    page.hesp_requests = counter  # type: ignore[attr-defined] -- read by the tests and the logs
    page.hesp_settings = settings  # type: ignore[attr-defined]
    return page


def launch(page: gr.Blocks, host: str | None = None, port: int | None = None, block: bool = True) -> gr.Blocks:
    """Serve `page` on `host:port` (Gradio's defaults, which a Space sets, when None) with the page's upload limit;
    `block=False` returns at once (tests, notebooks)."""
    settings: PageSettings = page.hesp_settings  # type: ignore[attr-defined]
    page.launch(
        server_name=host,
        server_port=port,
        max_file_size=settings.max_file_size,
        prevent_thread_lock=not block,
        show_error=False,
        ssr_mode=False,
        quiet=not block,
    )
    return page


# ------------------------------------------------------------------------------------------------- what is shown
def _introduction(known: list[str], config: Any, settings: PageSettings) -> str:
    threshold = getattr(config, "unknown_threshold", None)
    unknown = (
        f"any other expression is reported as **{config.unknown_label}**"
        if threshold is not None
        else f"this model is not calibrated and never says {config.unknown_label}"
    )
    source = f" Model: `{settings.checkpoint}`." if settings.checkpoint else ""
    return (
        f"# {TITLE}\n"
        f"The model knows {len(known)} expressions: {', '.join(known)}; {unknown}. Videos longer than "
        f"{settings.window_s:g} s also get a timeline.{source}\n\n{guarantee_statement(config)}"
    )


def _shown(result: Analysis, folder: Path) -> tuple[Any, ...]:
    decision = result.decision
    status = f"Analysed **{result.name}** ({result.duration:.1f} s)."
    if result.face_found is False:
        status += " No face was found in the sampled frames: the whole frames were used."
    gallery = [
        (str(_frame_png(crop, folder / f"frame-{i + 1}.png")), f"frame {i + 1}") for i, crop in enumerate(result.crops)
    ]
    if result.timeline is not None:
        image = _timeline_png(result, folder)
        rows = [
            [round(s.start, 2), round(s.end, 2), s.decision, None if s.mean_score is None else round(s.mean_score, 3)]
            for s in result.timeline.segments
        ]
        headers = ["start (s)", "end (s)", "decision", "mean known-ness"]
        if result.timeline.faces == "all":  # a lane per person: say whose each segment is
            rows = [[s.person, *row] for s, row in zip(result.timeline.segments, rows, strict=True)]
            headers = ["person", *headers]
        plot = gr.update(value=str(image), visible=True)
        table = gr.update(value={"headers": headers, "data": rows}, visible=True)
    else:
        plot, table = gr.update(value=None, visible=False), gr.update(value=None, visible=False)
    faces = [
        (str(_frame_png(p.thumbnail, folder / f"{p.person}.png")), f"{p.person}: {p.decision.decision}")
        for p in result.people
        if p.thumbnail is not None
    ]
    return (
        status,
        decision_text(result),
        dict(decision.probabilities),
        gallery,
        plot,
        table,
        gr.update(value=faces, visible=bool(faces)),
        [str(path) for path in result.files],
    )


def decision_text(result: Analysis) -> str:
    """The decision in words: the label, and the known-ness score against the threshold."""
    decision = result.decision
    score = f"{decision.score:.3f}"
    if decision.threshold is None:
        reason = f"known-ness {score} (uncalibrated model: no threshold, never unknown)"
    elif decision.known:
        reason = f"known-ness {score} ≥ threshold {decision.threshold:.3f}: one of the model's expressions"
    else:
        reason = f"known-ness {score} < threshold {decision.threshold:.3f}: none of the model's expressions"
    if decision.known_p_value is not None:  # how the clip ranks among the known calibration clips
        reason += f"; p-value {decision.known_p_value:.3f} (the share of known calibration clips scoring this low)"
    text = f"## {decision.label}\n{reason}"
    if result.timeline is not None:  # the clip's decision sums up a recording that may hold several expressions
        frames = len(result.crops)
        text += (
            f"\n\nFor the whole video ({frames} frames over {result.duration:.1f} s); the timeline below shows "
            "when each expression happens."
        )
    if result.closest is not None:
        text += f"\n\nClosest description: **{result.closest[0]}**: {result.closest[1]}"
    if result.people:  # each person's decision over the whole video
        text += "\n\n" + "\n".join(
            f"- **{p.person}**: {p.decision.decision} (known-ness {p.decision.score:.3f})" for p in result.people
        )
    return text


def _frame_png(frame: Any, path: Path) -> Path:
    """A frame as a PNG file of this request. Files, not arrays: Gradio caches an array by rewriting the file named
    by its content in place, so a request showing the same frame as one being downloaded cut that download short
    (seen under load); a file is copied into the cache under a temporary name and renamed."""
    from PIL import Image

    Image.fromarray(frame).save(path)
    return path


def _timeline_png(result: Analysis, folder: Path) -> Path:
    """The timeline's plot as a PNG in the request's folder (the figure is closed: nothing stays in memory)."""
    import matplotlib.pyplot as plt

    from ..inference.timeline_outputs import plot_timeline

    path = folder / "timeline.png"
    figure = plot_timeline(result.timeline)
    try:
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


def _problem(message: str) -> tuple[Any, ...]:
    hidden = gr.update(value=None, visible=False)
    return f"**Cannot analyse:** {message}", "", None, [], hidden, hidden, hidden, None
