"""Timelines of every person in a recording: faces linked into people whose ids survive swapping places, changing
size and leaving; one person chosen once; per-person files; scored against a synthetic recording whose truth is
known (who is where, what each shows), and the edge cases (no face, one person, three, a crowd, bad options)."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("cv2")

from hesp_hf.data.frame_stream import FrameStream  # noqa: E402
from hesp_hf.embedded.synthetic import FaceIdentity, action_track, render_frame  # noqa: E402
from hesp_hf.embedded.synthetic_people import ABSENT, two_people_recording  # noqa: E402
from hesp_hf.embedded.video_writer import write_video  # noqa: E402
from hesp_hf.evaluation.people_accuracy import people_accuracy  # noqa: E402
from hesp_hf.inference.face_appearance import ColourDescriptor, SFaceDescriptor  # noqa: E402
from hesp_hf.inference.face_tracks import FaceTracker, TrackerSettings, distinct_faces  # noqa: E402
from hesp_hf.inference.timeline import NO_FACE  # noqa: E402
from hesp_hf.inference.timeline import timeline as make_timeline  # noqa: E402
from hesp_hf.inference.timeline_outputs import write_timeline  # noqa: E402
from hesp_hf.modeling.face_cropping_hesp import shared_detector  # noqa: E402
from hesp_hf.modeling.video_processing_hesp import HESPVideoProcessor  # noqa: E402

from .conftest import frozen_prototype_model  # noqa: E402


KNOWN = ["happiness", "anger"]
DRAWN_FACES = 0.05  # YuNet's score for the drawn faces: 0.06-0.9 (docs/timeline.md)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """The two-person recording and the one-person recordings of the same footage (rendered faces shared)."""
    folder = tmp_path_factory.mktemp("people")
    tiles: dict = {}
    both = two_people_recording(folder / "two.mp4", tiles=tiles)
    alone = {name: two_people_recording(folder / f"{name}.mp4", people=(name,), tiles=tiles) for name in "AB"}
    return both, alone


@pytest.fixture(scope="module")
def prototype_model():
    """A prototype head on the embedded CLIP's frozen features fitted on centred clips of two known classes, with
    a processor that crops faces at the drawn faces' detector score (as the stitched-recording test of
    test_timeline.py, no training)."""
    model, processor = frozen_prototype_model(KNOWN)
    processor.face_min_score = DRAWN_FACES
    return model, processor


def true_spans(recording, model) -> dict:
    """Each person's truth in the model's terms (classes it does not know: its unknown label)."""
    unknown = model.config.unknown_label
    return {
        name: [(a, b, label if label in KNOWN or label == ABSENT else unknown) for a, b, label in spans]
        for name, spans in recording.truth.items()
    }


def score(result, recording, model):
    windows = [(w.person, (w.start + w.end) / 2, w.face_box) for w in result.windows]
    segments = [(s.person, s.start, s.end, s.decision) for s in result.segments]
    frame_times = (np.arange(round(recording.duration * recording.fps)) + 0.5) / recording.fps
    return people_accuracy(windows, segments, true_spans(recording, model), recording.who, frame_times)


# ------------------------------------------------------------------------------------------------ the tracker
def test_ids_survive_swapping_places_changing_size_and_leaving(recordings):
    """Frame by frame: each followed id stays on one true person; the person who left gets their id back."""
    both, _ = recordings
    calls = []
    tracker = FaceTracker(TrackerSettings(rate=4.0, min_score=DRAWN_FACES), follow="all")
    detector = tracker.detector
    tracker.detector = type("Counting", (), {"faces": lambda self, image: calls.append(1) or detector.faces(image)})()
    seen: dict[str, list[str]] = {}
    frames = list(tracker.frames(iter(FrameStream(both.path, 4.0))))
    for frame in frames:
        for person, (box, detected) in frame.people.items():
            true = both.who(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), frame.time)
            if detected:
                seen.setdefault(true, []).append(person)
    assert [p.id for p in tracker.people] == ["person-1", "person-2"]
    assert set(seen["A"]) == {"person-1"} and set(seen["B"]) == {"person-2"}  # A starts on the left
    assert len(seen["B"]) >= 0.75 * 20 * 4 and len(seen["A"]) >= 0.75 * 24 * 4  # detected most of their time
    # B is off screen 16-20 s (the 0.5 s hold aside) and back after.
    assert not any("person-2" in f.people for f in frames if 16.6 < f.time < 20.0)
    assert any("person-2" in f.people for f in frames if f.time > 20.5)
    assert [p.first_seen for p in tracker.people] == [pytest.approx(0.125)] * 2
    # The detector runs once per sampled frame; the appearance model far less than once per face.
    assert len(calls) == len(frames) == 96
    assert tracker.appearance_calls < 0.4 * (len(seen["A"]) + len(seen["B"]))


def test_nested_detections_of_one_face_count_once():
    faces = np.array(
        [
            [100, 100, 180, 190, 0.12] + [0] * 10,
            [80, 70, 210, 230, 0.06] + [0] * 10,  # YuNet's looser box around the same face
            [300, 100, 380, 190, 0.9] + [0] * 10,
        ],
        dtype=float,
    )
    kept = distinct_faces(faces)
    np.testing.assert_array_equal(kept[:, 4], [0.12, 0.9])  # left to right, the nested one gone


def test_appearance_descriptors_by_hand_and_on_one_face():
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[:50] = (255, 0, 0)  # red: hue 0, saturation 255
    frame[50:] = (0, 0, 255)  # blue: hue 120 (OpenCV's 0-180), saturation 255
    vector = ColourDescriptor()(frame, np.array([0, 0, 100, 100, 1.0]))
    expected = np.zeros(16 * 8)
    expected[[0 * 8 + 7, (120 * 16 // 180) * 8 + 7]] = np.sqrt(0.5)  # half the pixels in each bin
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)

    identity = FaceIdentity.sample(np.random.default_rng(11))
    actions = action_track("happiness", 8, np.random.default_rng(0))
    image = np.full((360, 640, 3), 120, np.uint8)
    image[100:230, 200:330] = render_frame(identity, actions[4], 0.5, 130)
    from hesp_hf.modeling.face_cropping_hesp import FaceDetector

    face = FaceDetector(640, DRAWN_FACES).faces(image)[0]
    assert face.shape == (15,) and 200 <= face[5] <= face[7] <= 330  # the eyes' landmarks inside the face
    sface = SFaceDescriptor()
    first, again = sface(image, face), sface(image, face)
    assert first.shape == (128,) and np.linalg.norm(first) == pytest.approx(1.0)
    np.testing.assert_allclose(first, again)
    shifted = np.roll(image, (7, 11), axis=(0, 1))  # the same face elsewhere: the same embedding, nearly
    assert float(first @ sface(shifted, face + np.r_[11, 7, 11, 7, 0, [11, 7] * 5])) > 0.95


# --------------------------------------------------------------------------------------------- the timeline
@pytest.fixture(scope="module")
def people_timeline(recordings, prototype_model):
    model, processor = prototype_model
    return make_timeline(model, processor, recordings[0].path, window=2.0, stride=0.5, faces="all")


def test_each_person_is_as_right_as_alone_with_no_identity_switch(recordings, prototype_model, people_timeline):
    model, processor = prototype_model
    both, alone = recordings
    result = people_timeline
    scored = score(result, both, model)
    assert scored.identity == {"person-1": "A", "person-2": "B"}
    assert scored.identity_switches == 0 and scored.relinked == {"A": True, "B": True}
    for name in "AB":
        single = make_timeline(model, processor, alone[name].path, window=2.0, stride=0.5, faces="largest")
        reference = score(single, alone[name], model).accuracy[name].frame_accuracy
        assert scored.accuracy[name].frame_accuracy >= reference - 0.03, (name, reference)
    # B's windows in 16.5-19.5 s (off screen for all of them) are absent, none is decided.
    b_windows = [w for w in result.windows if w.person == "person-2"]
    assert {w.status for w in b_windows if 16.5 <= w.start and w.end <= 19.5} == {ABSENT}
    assert len(b_windows) == len([w for w in result.windows if w.person == "person-1"])  # one grid


def test_frames_are_shrunk_for_the_crops_and_boxes_stay_in_the_videos_pixels(
    tmp_path, recordings, prototype_model, people_timeline, monkeypatch
):
    """Following faces converts frames at the side the crops and the detector need (never enlarged), and a box
    found in a shrunk frame is reported in the video's own pixels."""
    import hesp_hf.inference.timeline_people as timeline_people

    model, processor = prototype_model
    first = lambda path, **options: next(iter(FrameStream(path, 4.0, **options)))  # noqa: E731
    kept, shrunk, enlarged = (
        first(recordings[0].path, shortest_edge=480, shrink_only=True),  # 640 x 360
        first(recordings[0].path, shortest_edge=180, shrink_only=True),
        first(recordings[0].path, shortest_edge=480),
    )
    assert (kept.image.shape, kept.scale) == ((360, 640, 3), 1.0)
    assert (shrunk.image.shape, shrunk.scale) == ((180, 320, 3), 2.0)
    assert (enlarged.image.shape, enlarged.scale) == ((480, 853, 3), 0.75)
    assert timeline_people.people_decode_edge(processor) == 480  # 64-pixel crops: the detector's side decides
    monkeypatch.setattr(timeline_people, "PEOPLE_MIN_EDGE", 100)
    assert timeline_people.people_decode_edge(processor) == 206  # then the crops': ceil(64 x 720 / 224)

    # A 480p recording converted at 360 (what the detector looks at either way): boxes found in the 360-line frames
    # and reported in the 480p video's pixels put each id on one true person, as right as the 360p recording's.
    recording = two_people_recording(tmp_path / "480p.mp4", height=480)
    monkeypatch.setattr(timeline_people, "PEOPLE_MIN_EDGE", 360)
    small = make_timeline(model, processor, recording.path, window=2.0, stride=0.5, faces="all")
    scored = score(small, recording, model)
    assert sorted(scored.identity.values()) == ["A", "B"] and scored.identity_switches == 0
    reference = score(people_timeline, recordings[0], model)
    for name in "AB":
        assert scored.accuracy[name].frame_accuracy >= reference.accuracy[name].frame_accuracy - 0.05, name
    assert max(max(w.face_box) for w in small.windows if w.face_box is not None) > 640  # not the 640x360 frame's


def test_one_person_who_leaves_is_one_person(recordings, prototype_model):
    """Person B alone (leaving 16-20 s): one person, absent while gone, the same id on return."""
    model, processor = prototype_model
    _, alone = recordings
    result = make_timeline(model, processor, alone["B"].path, window=2.0, stride=0.5, faces="all")
    assert [p.id for p in result.people] == ["person-1"]
    scored = score(result, alone["B"], model)
    assert scored.identity == {"person-1": "B"} and scored.identity_switches == 0 and scored.relinked["B"]
    # Gone 16-20 s with no other face there: those windows show no face at all.
    assert {w.status for w in result.windows if 16.5 <= w.start and w.end <= 19.5} == {NO_FACE}


def test_largest_follows_one_person_chosen_once(tmp_path, prototype_model):
    """A large face at the centre, a small one aside that grows past it after 3 s: the large one is followed
    throughout (chosen once, not again per batch of frames)."""
    model, processor = prototype_model
    path, boxes = scene(tmp_path / "grow.mp4", seconds=8, faces={"A": lambda t: (320, 180, 150), "B": lambda t: (
        560, 180, 90 if t < 3 else 90 + 30 * min(t - 3, 2))})  # fmt: skip
    result = make_timeline(model, processor, path, window=2.0, stride=0.5, face_crop=True, batch_size=4)
    assert [p.id for p in result.people] == ["person-1"] and result.faces == "largest"
    assert all(w.status == "ok" for w in result.windows)
    for window in result.windows:  # every window's crop centred on A
        x0, y0, x1, y1 = window.face_box
        assert abs((x0 + x1) / 2 - 320) < 20 and abs((y0 + y1) / 2 - 180) < 20


def test_three_people_a_crowd_cap_and_no_face(tmp_path, prototype_model, caplog):
    model, processor = prototype_model
    places = {"A": lambda t: (130, 180, 120), "B": lambda t: (320, 180, 110), "C": lambda t: (520, 180, 100)}
    path, _ = scene(tmp_path / "three.mp4", seconds=4, faces=places)
    result = make_timeline(model, processor, path, window=2.0, stride=0.5, faces="all")
    assert [p.id for p in result.people] == ["person-1", "person-2", "person-3"]
    centres = [np.mean([(w.face_box[0] + w.face_box[2]) / 2 for w in result.windows if w.person == p.id])
               for p in result.people]  # fmt: skip
    np.testing.assert_allclose(centres, [130, 320, 520], atol=15)  # numbered left to right when they appear at once
    with caplog.at_level(logging.WARNING):
        capped = make_timeline(model, processor, path, window=2.0, stride=0.5, faces="all", max_faces=2)
    assert "3 faces in one frame: the 2 largest are followed" in caplog.text
    assert len(capped.people) == 2 and all(abs(np.mean(
        [(w.face_box[0] + w.face_box[2]) / 2 for w in capped.windows if w.person == p.id]) - 520) > 50
        for p in capped.people)  # fmt: skip

    empty, _ = scene(tmp_path / "nobody.mp4", seconds=3, faces={})
    nobody = make_timeline(model, processor, empty, window=2.0, stride=0.5, faces="all")
    assert nobody.people == [] and {w.status for w in nobody.windows} == {NO_FACE}
    assert [s.decision for s in nobody.segments] == [NO_FACE]
    with pytest.raises(ValueError, match="faces must be one of largest, all, got 'everyone'"):
        make_timeline(model, processor, empty, faces="everyone")


# ------------------------------------------------------------------------------------------- files, command
def test_files_per_person(tmp_path, people_timeline):
    result = people_timeline
    summary = write_timeline(result, tmp_path / "out", "two", settings={})
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(summary["files"] + ["summary.json"])
    windows = [json.loads(line) for line in (out / "windows.jsonl").read_text().splitlines()]
    assert {w["person"] for w in windows} == {"person-1", "person-2"}
    assert (out / "windows.csv").read_text().splitlines()[0].startswith("person,start,end,status")
    people = json.loads((out / "summary.json").read_text())["people"]
    assert people["person-1"]["seconds_on_screen"] == pytest.approx(24.0, abs=2.0)  # a few missed detections
    assert people["person-2"]["seconds_on_screen"] == pytest.approx(20.0, abs=1.0)  # gone 16-20 s
    assert people["person-2"]["seconds_per_decision"][ABSENT] == pytest.approx(4.0, abs=1.0)
    for person in ("person-1", "person-2"):
        thumbnail = out / people[person]["thumbnail"]
        assert thumbnail.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cues = [block.splitlines() for block in (out / "two.vtt").read_text().split("\n\n")[1:] if block.strip()]
    spoken = [s for s in result.segments if s.decision != ABSENT]
    assert len(cues) == len(spoken)
    assert all(cue[2].startswith("<v person-") and cue[2].endswith("</v>") for cue in cues)
    first_b = next(s for s in spoken if s.person == "person-2")
    assert f"<v person-2>{first_b.decision}" in "\n".join(cue[2] for cue in cues)


def run_cli(monkeypatch, *argv: str) -> None:
    from hesp_hf.commands import timeline as command

    monkeypatch.setattr(sys, "argv", ["hesp-timeline", *argv])
    command.cli()


def test_the_command_checks_faces_in_one_line(tmp_path, monkeypatch, capsys):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    base = ["--checkpoint", str(tmp_path), "--output", str(tmp_path / "out"), str(video)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(monkeypatch, *base, "--faces", "everyone")
    assert exit_info.value.code == 2
    assert "--faces must be one of largest, all, got 'everyone'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "cv2", None)  # the face extra not installed
    with pytest.raises(SystemExit):
        run_cli(monkeypatch, *base, "--faces", "all")
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--faces all needs the face detector, which is not installed: pip install" in errors[0]
    # From Python: the error says that following faces needs the extra, and how to install it.
    from hesp_hf.inference.timeline_people import face_tracker

    shared_detector.cache_clear()  # built per setting and kept: the detector must be built again to fail
    with pytest.raises(ImportError, match=r"faces='all' / 'largest' for a timeline\) needs OpenCV .*pip install"):
        face_tracker(HESPVideoProcessor(), 4.0, "all")


# ---------------------------------------------------------------------------------------------- helpers
def scene(path: Path, seconds: int, faces: dict, fps: int = 8, ids_from: dict | None = None) -> tuple[Path, dict]:
    """A 640x360 room with drawn faces at `faces[name](t) -> (x, y, side)`, each its own identity (numbered by its
    place in `ids_from`, default `faces`: the same person with or without the others)."""
    from .test_face_cropping import cluttered_background

    backdrop = cluttered_background(360, 640, 4).clip(0, 255).astype(np.uint8)
    numbers = {name: k for k, name in enumerate(ids_from or faces)}
    identities = {name: FaceIdentity.sample(np.random.default_rng(40 + numbers[name])) for name in faces}
    actions = {name: action_track("happiness", seconds * fps, np.random.default_rng(numbers[name])) for name in faces}
    frames, boxes = [], {name: [] for name in faces}
    for t in range(seconds * fps):
        frame = backdrop.copy()
        for name, place in faces.items():
            x, y, side = place(t / fps)
            side = int(side)
            x0, y0 = int(x - side / 2), int(y - side / 2)
            frame[y0 : y0 + side, x0 : x0 + side] = render_frame(identities[name], actions[name][t], 0.5, side)
            boxes[name].append((x0, y0, x0 + side, y0 + side))
        frames.append(frame)
    return write_video(path, np.stack(frames), fps=fps, options={"qp": "0"}), boxes


# ------------------------------------------------------------------------------------------- hesp-predict
def test_predict_gives_each_person_of_a_clip_the_decision_they_get_alone(tmp_path, prototype_model):
    """`--faces all` on a clip of two people: one row each, the same as on the same clip with that person alone;
    each person's crops where the one-face path (`HESPVideoProcessor(face_crop=True)`) puts them on that clip."""
    from hesp_hf.data.decoding import sample_clip
    from hesp_hf.inference.prediction_people import people_in_clip, predict_people, read_people_rows

    model, processor = prototype_model
    places = {"A": lambda t: (170, 180, 130), "B": lambda t: (470, 170, 120)}
    both, _ = scene(tmp_path / "two.mp4", seconds=2, faces=places)
    empty, _ = scene(tmp_path / "empty.mp4", seconds=2, faces={})
    alone = {name: scene(tmp_path / f"{name}.mp4", 2, {name: places[name]}, ids_from=places)[0] for name in "AB"}
    rows = predict_people(model, processor, [both, empty, *alone.values()], tmp_path / "rows.csv", thumbnails=tmp_path)
    assert [(Path(r["file"]).stem, r["person"]) for r in rows] == [
        ("two", "person-1"),
        ("two", "person-2"),
        ("empty", None),
        ("A", "person-1"),
        ("B", "person-1"),
    ]
    assert rows[2]["error"] == "no face in any sampled frame" and rows[0]["frames_on_screen"] == 8
    assert Path(rows[0]["thumbnail"]).read_bytes()[:4] == b"\x89PNG"
    assert [r["person"] for r in read_people_rows(tmp_path / "rows.csv")] == [r["person"] for r in rows]
    for together, by_itself in ((rows[0], rows[3]), (rows[1], rows[4])):
        assert together["label"] == by_itself["label"] and together["score"] == pytest.approx(by_itself["score"])
    one_face = processor.__class__.from_dict({**processor.to_dict(), "face_crop": True})
    for name, number in (("A", 0), ("B", 1)):
        clip = sample_clip(str(alone[name]), 8)
        expected = one_face.track_face(clip.frames).boxes
        boxes = people_in_clip(sample_clip(str(both), 8).frames, np.asarray(clip.timestamps), processor)[number][1]
        np.testing.assert_allclose(boxes, expected, atol=2.0)


# ------------------------------------------------------------------------------------------------- the app
def test_the_app_gives_each_person_a_decision_and_a_lane(tmp_path, recordings, prototype_model):
    from hesp_hf.app.analysis import analyse_video
    from hesp_hf.app.page import decision_text

    model, processor = prototype_model
    both, _ = recordings
    result = analyse_video(model, processor, both.path, tmp_path / "long", faces="all")
    assert [p.person for p in result.people] == [p.id for p in result.timeline.people] == ["person-1", "person-2"]
    for person in result.people:  # the decision of most of the person's decided time
        seconds = result.timeline.summary()["people"][person.person]["seconds_per_decision"]
        decided = {k: v for k, v in seconds.items() if k not in (ABSENT, NO_FACE, "unreadable")}
        assert person.decision.decision == max(decided, key=decided.get)
        assert person.thumbnail is not None and person.thumbnail.shape == (96, 96, 3)
    saved = json.loads((tmp_path / "long" / "result.json").read_text())
    assert [p["person"] for p in saved["people"]] == ["person-1", "person-2"]
    assert "- **person-2**: " in decision_text(result)

    places = {"A": lambda t: (170, 180, 130), "B": lambda t: (470, 170, 120)}
    short, _ = scene(tmp_path / "short.mp4", seconds=2, faces=places)  # one window: no timeline
    clip = analyse_video(model, processor, short, tmp_path / "short", faces="all")
    assert clip.timeline is None and [p.person for p in clip.people] == ["person-1", "person-2"]


def test_the_summary_line_names_each_person():
    from hesp_hf.commands.timeline import _summary_line

    summary = {
        "duration": 10.0,
        "segments": 3,
        "seconds_per_decision": {"happy": 8.0, "absent": 2.0},
        "people": {
            "person-1": {"seconds_on_screen": 10.0, "seconds_per_decision": {"happy": 10.0}},
            "person-2": {"seconds_on_screen": 4.0, "seconds_per_decision": {"absent": 6.0, "happy": 4.0}},
        },
    }
    assert _summary_line(summary, Path("out")) == (
        "10.0 s, 3 segments; person-1: 10.0 s on screen (happy 10.0 s); "
        "person-2: 4.0 s on screen (absent 6.0 s, happy 4.0 s) -> out"
    )
    assert _summary_line({**summary, "people": {}}, Path("out")).endswith(
        "nobody followed (no face long enough) -> out"
    )


def test_frames_pushed_a_few_at_a_time_give_the_recordings_people_timeline(
    recordings, prototype_model, people_timeline
):
    """A live stream's path (`WindowDecider` with faces, frames pushed as they come, `finish` at the end) gives every
    person the windows the file's timeline gives them."""
    from hesp_hf.inference.timeline import WindowDecider

    model, processor = prototype_model
    decider = WindowDecider(model, processor, 2.0, 0.5, faces="all")
    stream = FrameStream(
        recordings[0].path, decider.rate, shortest_edge=decider.decode_edge, shrink_only=decider.shrink_only
    )
    pushed, frames = [], list(stream)
    for start in range(0, len(frames), 3):  # 3 frames at a time, as a live stream's passes take them
        pushed += decider.add(frames[start : start + 3])
    pushed += decider.finish(stream.duration)
    key = lambda w: (w.person, w.start)  # noqa: E731
    assert sorted(map(key, pushed)) == sorted(map(key, people_timeline.windows))
    expected = {key(w): w for w in people_timeline.windows}
    for window in pushed:
        reference = expected[key(window)]
        assert (window.status, window.label) == (reference.status, reference.label)
        if reference.score is None:
            assert window.score is None
        else:
            assert window.score == pytest.approx(reference.score, abs=1e-5)
    segments, people = decider.segments_and_people(pushed, stream.duration)
    assert [(s.person, s.start, s.end, s.decision) for s in segments] == [
        (s.person, s.start, s.end, s.decision) for s in people_timeline.segments
    ]
    assert [p.id for p in people] == [p.id for p in people_timeline.people]


def test_the_live_page_follows_every_person_of_the_webcam(tmp_path, recordings, prototype_model, people_timeline):
    """The Live page's session with *every person*: the webcam's frames (here the two-person recording's, sent as the
    browser sends them) give each person the windows the recording's timeline gives them, and the session's files a
    lane and a face per person."""
    from hesp_hf.app.live_page import FACE_CHOICES, latest_per_person, window_text
    from hesp_hf.app.live_session import LiveSession

    model, processor = prototype_model
    session = LiveSession(model, processor, 2.0, 0.5, faces=FACE_CHOICES["every person"])
    stream = FrameStream(recordings[0].path, session.decider.rate, shortest_edge=None)
    decided = []
    for frame in stream:  # each sampled frame sent at its moment, as a browser at the sampling step sends them
        decided += session.add_frame(frame.image, at=frame.time)
    summary = session.finish(tmp_path / "session", "webcam")
    assert {w.person for w in decided} == {"person-1", "person-2"}
    expected = {(w.person, w.start): w.decision for w in people_timeline.windows}
    got = {(w.person, w.start): w.decision for w in session.windows}
    shared = set(got) & set(expected)
    # The same decisions; only the file's last windows are missing (the session ends at the last frame sent).
    assert all(got[key] == expected[key] for key in shared)
    last = max(start for _, start in got)
    assert shared == set(got) and all(start > last for _, start in set(expected) - shared)
    assert sorted(summary["people"]) == ["person-1", "person-2"]
    assert (tmp_path / "session" / "person-1.png").is_file() and (tmp_path / "session" / "person-2.png").is_file()
    texts = [window_text(w) for w in latest_per_person(decided[-6:])]
    assert any(t.startswith("## person-1: ") for t in texts) or any(t.startswith("## person-2: ") for t in texts)


def test_a_tower_pass_takes_at_most_batch_size_crops_and_decides_the_same(
    recordings, prototype_model, people_timeline, monkeypatch
):
    """`batch_size` counts face crops (one tower pass), whatever the number of people: with 3, two people's frames go
    one at a time, and every window is decided as with 32."""
    from hesp_hf.inference.timeline import WindowScorer

    model, processor = prototype_model
    passes: list[int] = []
    encode = WindowScorer.encode

    def counted(self, pixels):
        passes.append(len(pixels))
        return encode(self, pixels)

    monkeypatch.setattr(WindowScorer, "encode", counted)
    small = make_timeline(model, processor, recordings[0].path, window=2.0, stride=0.5, faces="all", batch_size=3)
    assert passes and max(passes) <= 3 and 2 in passes
    assert [(w.person, w.start, w.status, w.label) for w in small.windows] == [
        (w.person, w.start, w.status, w.label) for w in people_timeline.windows
    ]
    for got, expected in zip(small.windows, people_timeline.windows, strict=True):
        assert (got.score is None) == (expected.score is None)
        if got.score is not None:
            assert got.score == pytest.approx(expected.score, abs=1e-5)
