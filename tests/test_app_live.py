"""The app's Live page: webcam frames placed on the timeline's grid and decided as the model decides those frames as a
clip, a camera pause marked rather than decided, the session's files, and the page in a headless Chromium whose
fake camera plays a clip (skipped, with the reason, where no Chromium is installed)."""

import json
import os

import numpy as np
import pytest
import torch


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
gr = pytest.importorskip("gradio", reason="the app needs the `app` extra (pip install 'hesp-hf[app]')")

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor  # noqa: E402
from hesp_hf.app.live_session import LiveSession  # noqa: E402
from hesp_hf.app.page import PageSettings, build_page, launch  # noqa: E402
from hesp_hf.inference.timeline import UNREADABLE  # noqa: E402

from .conftest import LABELS, random_video  # noqa: E402
from .test_app import chromium_executable, free_port  # noqa: E402


@pytest.fixture(scope="module")
def pair(tiny_clip_dir):
    torch.manual_seed(0)
    model = HESPForOpenSetVideoClassification.from_clip(str(tiny_clip_dir), labels=LABELS, num_frames=4).eval()
    model.config.unknown_threshold = 0.0
    return model, HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)


def test_webcam_frames_are_decided_as_the_model_decides_those_frames(pair, tmp_path):
    model, processor = pair
    frames = random_video(frames=14, height=32, width=40, seed=7)  # the model's input size: no scaling
    session = LiveSession(model, processor, window=1.0, stride=0.25)  # 4 frames a second, one per stride
    windows = []
    for k, frame in enumerate(frames):  # frame k arrives a little after k / 4 s, as a browser sends them
        windows += session.add_frame(frame, at=100.0 + k / 4 + 0.01 * (k % 3))
    # Moment j (at (j + 0.5) / 4 s) shows frame j; frames up to 12 are placed once frame 13 arrives.
    assert [w.start for w in windows] == [0.25 * i for i in range(10)]
    for i, window in enumerate(windows):
        clip = torch.from_numpy(frames[i : i + 4]).permute(0, 3, 1, 2)
        pixels = processor(clip, do_sample_frames=False, return_tensors="pt")
        with torch.no_grad():
            reference = model(pixel_values_videos=pixels["pixel_values_videos"])
        assert window.label == model.config.id2label[int(reference.logits[0].argmax())]
        assert window.score == pytest.approx(float(reference.open_set_score[0]), abs=1e-4)

    # The camera stops for 2 s: the moments after the last frame's second have no frame, and are marked.
    later = session.add_frame(frames[0], at=100.0 + 14 / 4 + 2.0)
    assert session.gaps and session.gaps[0].start == pytest.approx(14 / 4 + 1.0, abs=0.26)
    assert [w.status for w in later][-1] == UNREADABLE
    summary = session.finish(tmp_path / "session", "webcam")
    assert summary["windows"] == len(session.windows) and summary["gaps"]
    assert (tmp_path / "session" / "webcam.vtt").read_text().startswith("WEBVTT")
    written = [json.loads(line) for line in (tmp_path / "session" / "windows.jsonl").read_text().splitlines()]
    assert [row["start"] for row in written] == [round(w.start, 3) for w in session.windows]


def y4m_clip(path, frames: np.ndarray, fps: int = 10):
    """A raw YUV4MPEG clip: what Chromium's fake camera plays (in a loop)."""
    import av

    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            image = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_the_live_page_in_a_browser_with_a_fake_camera(pair, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (the dev extra)")
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium here: apt-get install --no-install-recommends chromium (or set $HESP_CHROMIUM)")
    model, processor = pair
    camera = y4m_clip(tmp_path / "camera.y4m", random_video(frames=20, height=120, width=160, seed=2))
    port = free_port()
    page = launch(build_page(model, processor, PageSettings(window_s=1.0, stride_s=0.25)), "127.0.0.1", port, False)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--use-fake-device-for-media-stream",  # a camera that plays the clip
                    "--use-fake-ui-for-media-stream",  # camera access granted without asking
                    f"--use-file-for-fake-video-capture={camera}",
                ],
            )
            try:
                tab = browser.new_context(permissions=["camera"]).new_page()
                tab.goto(f"http://127.0.0.1:{port}/live")
                tab.get_by_role("button", name="Click to Access Webcam").click()
                tab.locator("#live-webcam").get_by_role("button", name="capture photo").click()  # starts streaming
                tab.locator("#live-decision h2").wait_for(timeout=60_000)
                label = tab.locator("#live-decision h2").inner_text().strip()
                assert label in model.config.known_labels  # threshold 0: every window is known
                tab.locator("#live-status").get_by_text("windows").wait_for(timeout=30_000)
                assert tab.locator("#live-timeline").count() == 1
                tab.get_by_role("button", name="End the session").click()
                tab.locator("#live-status").get_by_text("Session ended").wait_for(timeout=60_000)
                files = tab.locator("#live-files").inner_text()
                assert "vtt" in files and "jsonl" in files and "summary" in files
                final = tab.locator("#live-final img").first
                final.wait_for(state="visible", timeout=30_000)
                assert final.evaluate("img => img.complete ? img.naturalWidth : 0") > 0
            finally:
                browser.close()
    finally:
        page.close()
