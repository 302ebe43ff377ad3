"""Face cropping on faces nobody here drew (scikit-image's astronaut photograph) and on the synthetic faces."""

import logging

import numpy as np
import pytest
import torch

from hesp_hf import HESPVideoProcessor
from hesp_hf.embedded.synthetic import place_in_scene, render_clip
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.modeling.face_cropping_hesp import box_iou, face_track, select_track, shared_detector, smooth_boxes
from hesp_hf.modeling.video_decoding_hesp import decode_video


# The astronaut's face, brows to chin, measured by eye on the 512x512 photograph (x0, y0, x1, y1).
ASTRONAUT_FACE = np.array([178.0, 72.0, 270.0, 180.0])
PORTRAIT = (120, 20, 330, 240)  # the head and shoulders pasted into scenes


def cluttered_background(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, height)[:, None, None]
    background = (rng.uniform(40, 200, 3) * (1 - ramp) + rng.uniform(40, 200, 3) * ramp).repeat(width, axis=1)
    for _ in range(10):
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
        background[y : y + rng.integers(10, 80), x : x + rng.integers(10, 120)] = rng.uniform(0, 255, 3)
    return background


def astronaut_clip(count: int = 12, covered: tuple[int, ...] = (5, 6)) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The portrait in a 640x360 cluttered scene, moving right and down and growing over the clip; on the `covered`
    frames a board hides the face. Returns frames, the true face box per frame, and the frames where it is visible."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).crop(PORTRAIT)
    background = cluttered_background(360, 640, 0)
    frames, faces = [], []
    for t in range(count):
        scale = 0.55 + 0.35 * t / (count - 1)
        width, height = round(photo.width * scale), round(photo.height * scale)
        x, y = 60 + 25 * t, 30 + 8 * t
        frame = background.copy()
        frame[y : y + height, x : x + width] = np.asarray(photo.resize((width, height), Image.Resampling.BILINEAR))
        face = (ASTRONAUT_FACE - [PORTRAIT[0], PORTRAIT[1]] * 2) * scale + [x, y, x, y]
        if t in covered:
            x0, y0, x1, y1 = face.round().astype(int)
            frame[y0 - 5 : y1 + 5, x0 - 5 : x1 + 5] = (90, 90, 90)
        frames.append(frame.clip(0, 255).astype(np.uint8))
        faces.append(face)
    return np.stack(frames), np.stack(faces), [t for t in range(count) if t not in covered]


def covered_share(crop: np.ndarray, face: np.ndarray) -> float:
    inside = np.clip(np.minimum(crop[2:], face[2:]) - np.maximum(crop[:2], face[:2]), 0, None).prod()
    return float(inside / np.prod(face[2:] - face[:2]))


def test_the_track_follows_a_real_face_through_a_video(tmp_path):
    frames, faces, visible = astronaut_clip()
    path = write_video(tmp_path / "astronaut.mp4", frames, fps=12)
    decoded = decode_video(path).frames  # every frame, after H.264
    track = face_track(decoded, shared_detector(), margin=0.25)
    assert track.found and track.detected[visible].all() and not track.detected[[5, 6]].any()
    ious = box_iou(track.faces, faces).diagonal()
    assert ious[visible].min() >= 0.5, ious.round(2)
    for t in range(len(frames)):  # the square crop holds the whole face, covered frames included
        assert covered_share(track.boxes[t], faces[t]) > 0.95
        side_x, side_y = track.boxes[t, 2:] - track.boxes[t, :2]
        assert side_x == pytest.approx(side_y)
    # Stable: the crop's centre moves smoothly (no step larger than the face's own motion plus a few pixels).
    centres = (track.boxes[:, :2] + track.boxes[:, 2:]) / 2
    true_centres = (faces[:, :2] + faces[:, 2:]) / 2
    assert np.abs(np.diff(centres, axis=0)).max() <= np.abs(np.diff(true_centres, axis=0)).max() + 6


def test_the_largest_central_face_wins_and_keeps_the_track():
    small_corner = np.array([[5, 5, 25, 25, 0.99]])
    big_centre = np.array([[40, 30, 80, 80, 0.8]])
    detections = [np.concatenate([small_corner, big_centre]), big_centre + [2, 0, 2, 0, 0], np.zeros((0, 5))]
    boxes, detected = select_track(detections, (100, 120))
    np.testing.assert_allclose(boxes[0], big_centre[0, :4])
    np.testing.assert_allclose(boxes[1], [42, 30, 82, 80])
    np.testing.assert_allclose(boxes[2], [42, 30, 82, 80])  # no detection: the neighbour's box
    assert detected.tolist() == [True, True, False]
    np.testing.assert_allclose(
        smooth_boxes(np.array([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10.0]]))[1], [3, 0, 13, 10]
    )


def test_processor_crops_the_face_and_falls_back_to_the_whole_frame(tmp_path, caplog):
    frames, _, _ = astronaut_clip(8, covered=())
    with_face = write_video(tmp_path / "face.mp4", frames, fps=8)
    empty = write_video(
        tmp_path / "empty-room.mp4", cluttered_background(360, 640, 1)[None].repeat(8, 0).astype(np.uint8)
    )
    processor = HESPVideoProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, num_frames=4)
    plain = processor(str(with_face), return_tensors="pt")["pixel_values_videos"]
    cropped = processor(str(with_face), face_crop=True, return_tensors="pt")["pixel_values_videos"]
    assert cropped.shape == plain.shape == (1, 4, 3, 64, 64) and not torch.allclose(cropped, plain)
    with caplog.at_level(logging.WARNING):
        fallback = processor(str(empty), face_crop=True, return_tensors="pt")["pixel_values_videos"]
    assert f"No face found in any sampled frame of {empty}" in caplog.text
    # the whole frames, as decoded for face cropping (the plain path decodes at the model's size: another resize)
    from hesp_hf.modeling.video_decoding_hesp import decode_video

    whole = decode_video(empty, 4, shortest_edge=processor.decode_edge(face_crop=True)).frames
    expected = processor(torch.from_numpy(whole).permute(0, 3, 1, 2), do_sample_frames=False, return_tensors="pt")
    torch.testing.assert_close(fallback, expected["pixel_values_videos"])


def test_synthetic_faces_in_scenes_are_found():
    hits = 0
    for seed in range(6):
        faces, _ = render_clip(["happiness", "anger", "neutral"][seed % 3], seed, 8, 64)
        scene, boxes = place_in_scene(faces, seed, 144)
        track = face_track(scene, shared_detector(0.1), margin=0.25)  # drawn faces score low: the demo's 0.1
        hits += track.found
        for t in np.flatnonzero(track.detected):  # the drawn face (its square less the backdrop) is in the crop
            assert covered_share(track.boxes[t], boxes[t] + [8, 8, -8, -8]) > 0.9
    assert hits == 6


def test_data_path_detects_once_per_clip_and_counts_clips_without_a_face(tmp_path, monkeypatch):
    from hesp_hf.data import ClipTransform, clip_dataset, read_annotation, read_clip_log
    from hesp_hf.data.presets import PRESETS
    from hesp_hf.modeling import face_cropping_hesp

    frames, _, _ = astronaut_clip(12, covered=())
    write_video(tmp_path / "face.mp4", frames, fps=12)
    write_video(tmp_path / "room.mp4", cluttered_background(360, 640, 2)[None].repeat(12, 0).astype(np.uint8))
    (tmp_path / "list.csv").write_text("video_path,label\nface.mp4,0\nroom.mp4,1\n")
    records = read_annotation(tmp_path / "list.csv", PRESETS["mafw"])
    processor = HESPVideoProcessor(
        size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}, num_frames=4, face_crop=True
    )
    log, cache = tmp_path / "out" / "clip_report.tsv", tmp_path / "out" / "face_tracks"
    train = clip_dataset(records, ClipTransform(processor, training=True, clip_log=log, face_cache=cache))
    first = train[0]["pixel_values_videos"]
    assert first.shape == (4, 3, 48, 48) and len(list(cache.glob("*.json"))) == 1
    train[1]
    assert len(list(cache.glob("*.json"))) == 2

    def no_detection(*args, **kwargs):
        raise AssertionError("detected again although the track is cached")

    monkeypatch.setattr(face_cropping_hesp, "face_track", no_detection)
    for _ in range(3):  # later epochs: other random frames, the cached track's boxes at their times
        assert train[0]["pixel_values_videos"].shape == (4, 3, 48, 48)
        train[1]
    report = read_clip_log(log)
    assert report.no_face == {"train": [str(tmp_path / "room.mp4")]}
    assert report.counts(("train",), face_crop=True)["no_face_clips"] == {"train": 1}
