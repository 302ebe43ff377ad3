"""The app (`hesp-app`): what one request computes against hesp-predict's rows and the timeline, bad uploads answered
in words, the served page through `gradio_client` (8 requests at once under the concurrency limit, uploads deleted,
results downloadable and gone when the server stops), the command without a checkpoint, and the page in a real
headless Chromium (skipped, with the reason, where none is installed)."""

import json
import math
import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports from the tests
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
gr = pytest.importorskip("gradio", reason="the app needs the `app` extra (pip install 'hesp-hf[app]')")

from gradio_client import Client, handle_file  # noqa: E402

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor  # noqa: E402
from hesp_hf.app.analysis import RequestProblem, analyse_video  # noqa: E402
from hesp_hf.app.page import PageSettings, build_page, launch  # noqa: E402
from hesp_hf.commands import app as app_command  # noqa: E402
from hesp_hf.data.decoding import sample_clip  # noqa: E402
from hesp_hf.embedded.tiny_clip import save_char_tokenizer  # noqa: E402
from hesp_hf.embedded.video_writer import write_video  # noqa: E402
from hesp_hf.inference.prediction import predict_clips  # noqa: E402
from hesp_hf.inference.timeline import timeline as make_timeline  # noqa: E402
from hesp_hf.inference.zero_shot import CandidateScorer  # noqa: E402

from .conftest import LABELS, random_video  # noqa: E402


UPLOAD_LIMIT = "100kb"


@pytest.fixture(scope="module")
def pair(tiny_clip_dir):
    torch.manual_seed(0)
    model = HESPForOpenSetVideoClassification.from_clip(str(tiny_clip_dir), labels=LABELS, num_frames=4).eval()
    return model, HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    found = {
        "short": write_video(folder / "short.mp4", random_video(frames=6, height=40, width=48)),
        # 4 s at 8 fps, short side at the model's input size: longer than the 1 s window, so it gets a timeline
        "long": write_video(folder / "long.mp4", random_video(frames=32, height=32, width=40, seed=3), fps=8),
    }
    (folder / "notes.mp4").write_text("hello, this is not a video\n" * 10)
    (folder / "empty.mp4").write_bytes(b"")
    found.update(text=folder / "notes.mp4", empty=folder / "empty.mp4", zero=zero_frame_video(folder / "zero.mp4"))
    found["big"] = folder / "big.mp4"  # over the served page's limit
    found["big"].write_bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    return found


def zero_frame_video(path: Path) -> Path:
    """An mp4 container with an H.264 stream and no frame in it."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
        for packet in stream.encode():
            container.mux(packet)
    return path


def predicted_row(model, processor, clip: Path, describer=None) -> dict:
    """hesp-predict's row for `clip`: the reference the app's decision must match."""
    rows, _ = predict_clips(model, processor, [clip], num_workers=0, progress=False, describer=describer)
    return rows[0]


# ------------------------------------------------------------------------------------------------ one request
def test_a_clip_is_decided_as_hesp_predict_decides_it(pair, clips, tmp_path):
    model, processor = pair
    result = analyse_video(model, processor, clips["short"], tmp_path / "out", name="my clip.mp4")
    expected = predicted_row(model, processor, clips["short"])
    assert result.decision.label == expected["label"] and result.decision.known == expected["known"]
    assert result.decision.score == pytest.approx(expected["score"], abs=1e-5)
    assert result.decision.probabilities == pytest.approx(expected["probabilities"], abs=1e-5)
    # The frames shown are the frames the model saw: the clip's sampled frames (no face cropping here), converted at
    # the model's input size as hesp-predict converts them.
    seen = sample_clip(clips["short"], 4, shortest_edge=processor.decode_edge()).frames
    assert seen.shape[1:3] == (32, 38)  # 40x48 scaled to the shortest edge, 32
    np.testing.assert_array_equal(np.stack(result.crops), seen)
    assert result.timeline is None and result.face_found is None
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["file"] == "my clip.mp4" and saved["label"] == expected["label"]
    assert saved["score"] == pytest.approx(expected["score"], abs=1e-5)
    captions = (tmp_path / "out" / "my clip.vtt").read_text()
    assert captions.startswith("WEBVTT") and captions.count(" --> ") == 1 and expected["label"] in captions


def test_a_video_longer_than_a_window_gets_its_timeline(pair, clips, tmp_path):
    model, processor = pair
    result = analyse_video(model, processor, clips["long"], tmp_path, window=1.0, stride=0.5)
    reference = make_timeline(model, processor, clips["long"], window=1.0, stride=0.5)
    assert [w.to_json() for w in result.timeline.windows] == [w.to_json() for w in reference.windows]
    assert len(reference.windows) == 7  # (4 s - 1 s) / 0.5 s + 1
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["timeline"]["segments"] == [s.to_json() for s in reference.segments]
    assert (tmp_path / "long.vtt").read_text().count(" --> ") == len(reference.segments)


def test_an_unknown_clip_gets_the_closest_description_hesp_predict_gives(pair, clips, tmp_path, tiny_clip_dir):
    from transformers import AutoTokenizer

    model, processor = pair
    model.config.unknown_threshold = 1e6  # nothing reaches it: every clip is unknown
    try:
        describer = CandidateScorer(model, AutoTokenizer.from_pretrained(tiny_clip_dir))
        result = analyse_video(model, processor, clips["short"], tmp_path, describer=describer)
        expected = predicted_row(model, processor, clips["short"], describer=describer)
    finally:
        model.config.unknown_threshold = None
    assert result.decision.label == "unknown" and result.decision.known is False
    assert expected["closest_expression"] not in LABELS
    assert result.closest == (expected["closest_expression"], expected["closest_description"])
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["closest_description"] == expected["closest_description"]


@pytest.mark.parametrize(
    "kind, reason",
    [("text", "is text, not a video"), ("empty", "is empty (0 bytes)"), ("zero", "has no video stream")],
)
def test_a_bad_upload_is_a_message_naming_it(pair, clips, tmp_path, kind, reason):
    model, processor = pair
    with pytest.raises(RequestProblem, match=re.escape(reason)) as caught:
        analyse_video(model, processor, clips[kind], tmp_path, name="interview.mp4")
    assert "interview.mp4" in str(caught.value) and str(clips[kind]) not in str(caught.value)
    assert not (tmp_path / "result.json").exists()


# ------------------------------------------------------------------------------------------------ the served page
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(pair, tmp_path_factory) -> Path:
    model, processor = pair
    folder = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    save_char_tokenizer(folder)  # the model reads text: unknown clips get their closest description
    return folder


@pytest.fixture(scope="module")
def served(checkpoint):
    """The app as `hesp-app` starts it, on a free port, with a small upload limit and a 1 s timeline window."""
    port = free_port()
    argv = ["--checkpoint", str(checkpoint), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--max_file_size", UPLOAD_LIMIT, "--window_s", "1", "--concurrency", "2"]
    page = app_command.main(argv, block=False)
    yield page, f"http://127.0.0.1:{port}/"
    page.close()


@pytest.fixture
def client(served, tmp_path):
    return Client(served[1], verbose=False, download_files=str(tmp_path / "downloads"))


def status_of(outputs) -> str:
    return outputs[0]


def test_eight_requests_at_once_are_all_answered_within_the_concurrency_limit(served, client, pair, clips):
    import matplotlib.pyplot as plt
    import psutil

    page, _ = served
    model, processor = pair
    expected = {name: predicted_row(model, processor, clips[name])["label"] for name in ("short", "long")}
    order = ["short", "long", "short", "short"] * 2

    def round_of_eight() -> list:
        jobs = [client.submit(handle_file(str(clips[name])), False, api_name="/analyse") for name in order]
        return [job.result(timeout=120) for job in jobs]

    answered_before = page.hesp_requests.answered
    first = round_of_eight()
    rss_after_first = psutil.Process().memory_info().rss
    second = round_of_eight()
    rss_after_second = psutil.Process().memory_info().rss
    for name, outputs in zip(order * 2, first + second, strict=True):
        assert status_of(outputs).startswith(f"Analysed **{name}.mp4**"), status_of(outputs)
        assert outputs[1].startswith(f"## {expected[name]}\n")
    assert page.hesp_requests.answered - answered_before == 16  # none lost
    assert 1 <= page.hesp_requests.peak <= 2  # the queue's concurrency limit
    assert plt.get_fignums() == []  # every timeline figure was closed
    # Memory steady: a second round of the same requests adds little to what the first left (caches warmed).
    assert rss_after_second - rss_after_first < 64 * 2**20, (rss_after_first, rss_after_second)


@pytest.mark.parametrize(
    "kind, reason",
    [("text", "is text, not a video"), ("empty", "is empty (0 bytes)"), ("zero", "has no video stream")],
)
def test_a_bad_upload_gets_one_line_in_the_status(client, clips, kind, reason):
    outputs = client.predict(handle_file(str(clips[kind])), False, api_name="/analyse")
    status = status_of(outputs)
    assert status.startswith("**Cannot analyse:**") and reason in status and f"{clips[kind].name}" in status
    assert "Traceback" not in status and "\n" not in status
    assert outputs[1] == "" and outputs[-1] is None  # no decision, no files


def test_an_upload_over_the_limit_is_refused_by_the_server(client, clips):
    with pytest.raises(Exception, match="413|too large|exceeds|size"):
        client.predict(handle_file(str(clips["big"])), False, api_name="/analyse")


def test_uploads_are_deleted_after_their_request_and_results_when_the_server_stops(pair, clips, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # this server's own upload folder and cache
    model, processor = pair
    before = set(Path(tempfile.gettempdir()).glob("hesp-app-*"))
    port = free_port()
    page = launch(build_page(model, processor, PageSettings(upload_grace_s=0.2)), "127.0.0.1", port, block=False)
    try:
        cache = Path(page.GRADIO_CACHE)
        assert cache == tmp_path / "gradio"
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads"))
        outputs = client.predict(handle_file(str(clips["short"])), False, api_name="/analyse")
        assert set(Path(tempfile.gettempdir()).glob("hesp-app-*")) == before  # the request's own folder went
        files = {Path(path).name: Path(path) for path in outputs[-1]}
        assert set(files) == {"result.json", "short.vtt"}  # downloaded through the page
        assert json.loads(files["result.json"].read_text())["file"] == "short.mp4"
        kept = [p for p in cache.rglob("*") if p.is_file() and p.name in files]
        assert kept  # the results wait in the cache for their download ...
        for _ in range(200):  # the upload goes once its grace has passed (polled: an event, not a duration)
            if not list(cache.rglob("*.mp4")):
                break
            threading.Event().wait(0.1)
        assert not list(cache.rglob("*.mp4"))
    finally:
        page.close()
    assert not [p for p in kept if p.exists()]  # ... and go when the server stops
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_without_a_checkpoint_the_command_says_in_one_line_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no outputs/demo here
    monkeypatch.delenv("HESP_CHECKPOINT", raising=False)
    with pytest.raises(SystemExit) as caught:
        app_command.main([], block=False)
    message = str(caught.value.code)
    assert "`hesp-demo`" in message and "--checkpoint" in message and "\n" not in message


def test_page_settings_refuse_values_that_cannot_work():
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        PageSettings(concurrency=0)
    with pytest.raises(ValueError, match=r"^window_s must be a finite number of seconds > 0"):
        PageSettings(window_s=0)
    with pytest.raises(ValueError, match=r"^stride_s must be a finite number of seconds > 0 .* got inf\.$"):
        PageSettings(stride_s=math.inf)
    with pytest.raises(ValueError, match="upload_grace_s must be > 0 and <= keep_results_s"):
        PageSettings(upload_grace_s=0)
    with pytest.raises(ValueError, match="keep_results_s must be >= 1 second, got 0"):
        PageSettings(keep_results_s=0)
    # Results kept for less than the uploads' default grace period: uploads go when results do.
    assert PageSettings(keep_results_s=10).upload_grace_s == 10 and PageSettings().upload_grace_s == 30


def test_command_options_are_checked_before_the_model_loads(run_cli):
    from hesp_hf.commands.app import cli, file_size

    assert [file_size(text) for text in ("50mb", "1.5GB", "1048576", "none", "None")] == [
        "50mb", "1.5GB", 1048576, None, None
    ]  # fmt: skip
    for option, value, message in (
        ("--port", "99999", "--port: expected a port number from 0 to 65535, got '99999'"),
        ("--port", "http", "--port: expected a port number from 0 to 65535, got 'http'"),
        ("--max_file_size", "abc", '--max_file_size: expected a size such as "50mb"'),
        ("--max_file_size", "50 parsecs", "got '50 parsecs'"),
    ):
        done = run_cli(cli, "hesp-app", "--checkpoint", "no/such-model", option, value)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "no/such-model" not in done.stderr  # refused before loading


# ------------------------------------------------------------------------------------------------ a real browser
def chromium_executable() -> str | None:
    """A system Chromium (Debian's `chromium` package, or $HESP_CHROMIUM): the test downloads no browser."""
    candidates = [os.environ.get("HESP_CHROMIUM"), "/usr/lib/chromium/chromium"]
    candidates += [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (the dev extra)")
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium here: apt-get install --no-install-recommends chromium (or set $HESP_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to run as root (CI containers); no shared-memory size assumption
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


def test_the_page_in_a_browser_shows_the_decision_and_the_timeline(served, browser_page, pair, clips, tmp_path):
    _, url = served
    model, processor = pair
    expected = predicted_row(model, processor, clips["long"])
    page = browser_page
    page.goto(url)
    page.set_input_files("input[type=file]", str(clips["long"]))
    page.get_by_role("button", name="Analyse").click()
    page.locator("#status").get_by_text("Analysed long.mp4").wait_for(timeout=60_000)
    decision = page.locator("#decision").inner_text()
    assert decision.splitlines()[0].strip() == expected["label"]
    assert "known-ness" in decision
    plot = page.locator("#timeline img").first
    plot.wait_for(state="visible", timeout=30_000)
    width = plot.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 0  # the plot's PNG arrived and decoded
    assert page.locator("#crops img").count() >= 4  # the frames the model saw
    screenshot = tmp_path / "app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

    # A file over the upload limit never reaches the model: the page says why.
    page.reload()
    page.set_input_files("input[type=file]", str(clips["big"]))
    page.get_by_role("button", name="Analyse").click()
    page.locator("#status").get_by_text(f"limited to {UPLOAD_LIMIT}").wait_for(timeout=30_000)


def test_with_face_cropping_a_clip_without_a_face_is_decided_on_whole_frames(pair, clips, tmp_path):
    pytest.importorskip("cv2", reason="face cropping needs the `face` extra")
    model, processor = pair
    result = analyse_video(model, processor, clips["short"], tmp_path, face_crop=True)
    assert result.face_found is False  # noise: no face, so the frames go in whole, as hesp-predict does
    assert result.decision.label == predicted_row(model, processor, clips["short"])["label"]
    np.testing.assert_array_equal(np.stack(result.crops), sample_clip(clips["short"], 4).frames)


def test_a_model_that_learned_drawn_faces_gets_a_notice_above_the_result(pair):
    from hesp_hf.modeling.provenance_hesp import DRAWN_FACES_NOTICE

    model, processor = pair

    def shown(page) -> list[tuple[str, str]]:  # (elem_id, text) of the page's Markdown, in the order they are laid out
        blocks = sorted(page.blocks.items())
        return [(b.elem_id, str(b.value)) for _, b in blocks if isinstance(b, gr.Markdown) and b.elem_id]

    assert "drawn-faces-notice" not in [elem for elem, _ in shown(build_page(model, processor))]
    model.config.synthetic_backbone = True
    try:
        ids = shown(build_page(model, processor))
    finally:
        del model.config.synthetic_backbone
    elems = [elem for elem, _ in ids]
    assert elems.index("drawn-faces-notice") < elems.index("status") < elems.index("decision")
    assert DRAWN_FACES_NOTICE in dict(ids)["drawn-faces-notice"]
