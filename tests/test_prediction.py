"""The batch predictor: rows that match the model, bad files recorded, resumable, CSV = JSONL, sharded = single."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hesp_hf import HESPVideoProcessor
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.inference.clips import list_clips
from hesp_hf.inference.prediction import predict_clips, read_rows

from .conftest import LABELS, random_video


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkpoint(make_model, tiny_clip_dir, tmp_path):
    model = make_model(unknown_threshold=0.34, open_set_score="max_softmax")
    with torch.no_grad():  # spread the classes apart, so that labels vary over the clips
        model.prompt_learner.ctx.normal_(generator=torch.Generator().manual_seed(0))
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    paths = [write_video(folder / f"clip{i}.mp4", random_video(6, 40, 48, seed=i)) for i in range(7)]
    (folder / "broken.mp4").write_text("not a video")
    return [str(p) for p in paths[:3]] + [str(folder / "broken.mp4")] + [str(p) for p in paths[3:]]


def load(checkpoint):
    from hesp_hf.pairing import load_pair

    return load_pair(str(checkpoint))


@pytest.mark.parametrize("num_workers", [1, 0], ids=["worker-process", "decoding-thread"])
def test_rows_match_the_model_and_record_bad_files(checkpoint, clips, tmp_path, num_workers):
    model, processor = load(checkpoint)
    rows, summary = predict_clips(
        model, processor, clips, tmp_path / "out.jsonl", batch_size=3, num_workers=num_workers
    )
    assert [row["file"] for row in rows] == clips
    assert read_rows(tmp_path / "out.jsonl") == rows
    broken = rows[3]
    assert broken["error"].startswith("VideoDecodeError") and "broken.mp4" in broken["error"]
    assert broken["label"] == "" and broken["probabilities"] == {}
    for row in rows[:3] + rows[4:]:
        inputs = processor(row["file"], return_tensors="pt")
        with torch.no_grad():
            output = model(**inputs)
        assert row["label"] == model.config.id2label[int(output.logits.argmax())]
        assert row["known"] == (row["label"] != "unknown")
        assert row["score"] == pytest.approx(float(output.open_set_score), rel=1e-5)
        assert row["threshold"] == pytest.approx(0.34)
        expected = output.logits[0, : len(LABELS)].softmax(-1).tolist()
        assert list(row["probabilities"]) == LABELS
        assert list(row["probabilities"].values()) == pytest.approx(expected, rel=1e-5)
        assert row["error"] == "" and row["truncated"] is False
    assert summary.clips == 8 and summary.failures == 1 and summary.predicted_now == 8
    assert sum(summary.label_counts.values()) == 7
    assert summary.unknown_share == pytest.approx(summary.label_counts.get("unknown", 0) / 7)
    assert not list(tmp_path.glob(".out.part-*"))  # merged and removed


def test_background_decoding_keeps_order_raises_errors_and_stops_when_left():
    import threading
    import time

    from hesp_hf.inference.background import decoded_in_background

    assert list(decoded_in_background(iter(range(10)), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise ValueError("clip 2 unreadable")

    stream = decoded_in_background(failing())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="clip 2 unreadable"):
        next(stream)

    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            time.sleep(0.001)
            yield produced[-1]

    stream = decoded_in_background(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # as predict_clips does when a batch fails
    assert not any(t.name == "hesp-decode" and t.is_alive() for t in threading.enumerate())
    count = len(produced)
    time.sleep(0.05)
    assert len(produced) == count and count <= 3 + 2 + 1  # read at most `depth` (+ the one in hand) ahead


def test_resume_keeps_finished_rows_and_skips_torn_lines(checkpoint, clips, tmp_path):
    model, processor = load(checkpoint)
    output = tmp_path / "out.jsonl"
    first, _ = predict_clips(model, processor, clips[:4], output, batch_size=2, num_workers=0)
    # An interrupted later run: one finished batch in its part file, then half a line.
    part = tmp_path / ".out.part-0-of-1.jsonl"
    finished, _ = predict_clips(model, processor, clips[4:6], None, batch_size=2, num_workers=0)
    part.write_text("".join(json.dumps(row) + "\n" for row in finished) + '{"file": "cut')
    marked = {**finished[0], "label": "from-the-part"}  # proves the row is reused, not predicted again
    part.write_text(part.read_text().replace(json.dumps(finished[0]), json.dumps(marked)))
    rows, summary = predict_clips(model, processor, clips, output, batch_size=2, num_workers=0)
    assert [row["file"] for row in rows] == clips
    assert rows[:4] == first and rows[4]["label"] == "from-the-part"
    # The broken clip's row (an error) is tried again; the other five finished rows are kept.
    assert summary.predicted_now == len(clips) - 5 and summary.from_earlier_runs == 5
    assert not part.exists()
    again, summary = predict_clips(model, processor, clips, output, resume=False, batch_size=2, num_workers=0)
    assert summary.predicted_now == len(clips) and again[4]["label"] != "from-the-part"
    # Predicting a few clips again keeps every other clip's row, and a stale part of a run with another process
    # count (here: 2) does not win over the new rows.
    stale = tmp_path / ".out.part-1-of-2.jsonl"
    stale.write_text(json.dumps({**again[0], "label": "stale"}) + "\n")
    redone, summary = predict_clips(model, processor, clips[:1], output, resume=False, batch_size=2, num_workers=0)
    assert summary.predicted_now == 1 and redone[0]["label"] != "stale" and not stale.exists()
    assert [row["file"] for row in read_rows(output)] == clips


def test_resume_retries_failed_clips_and_refuses_another_models_rows(checkpoint, clips, tmp_path):
    """A clip that failed (a file still being copied, a missing extra) is tried again by a resumed run, and rows of
    another model (other threshold or classes) are never mixed with this one's."""
    model, processor = load(checkpoint)
    output = tmp_path / "out.jsonl"
    rows, summary = predict_clips(model, processor, clips[2:5], output, batch_size=2, num_workers=0)
    assert rows[1]["error"] and summary.failures == 1
    write_video(clips[3], random_video(6, 40, 48, seed=11))  # the broken file, now complete
    rows, summary = predict_clips(model, processor, clips[2:5], output, batch_size=2, num_workers=0)
    assert summary.predicted_now == 1 and summary.from_earlier_runs == 2 and summary.failures == 0
    assert rows[1]["error"] == "" and rows[1]["label"]
    model.config.unknown_threshold = 0.5  # another calibration: another checkpoint
    with pytest.raises(ValueError, match="predictions of another model.*--no_resume"):
        predict_clips(model, processor, clips[2:5], output, batch_size=2, num_workers=0)
    rows, summary = predict_clips(model, processor, clips[2:5], output, resume=False, batch_size=2, num_workers=0)
    assert summary.predicted_now == 3 and all(row["threshold"] == 0.5 for row in rows)


def test_no_resume_never_keeps_another_models_rows(checkpoint, clips, tmp_path, tiny_clip_dir):
    """--no_resume keeps the rows of clips it does not list: where those come from another model (other classes, as
    the CSV header would show, or another threshold) the run is refused and the output left as it was; following the
    advice (every clip of the output among the inputs) replaces them all."""
    from hesp_hf import HESPForOpenSetVideoClassification

    model, processor = load(checkpoint)
    other = HESPForOpenSetVideoClassification.from_clip(str(tiny_clip_dir), labels=["anger", "disgust"], num_frames=4)
    other.config.unknown_threshold = 0.5
    output = tmp_path / "out.csv"
    predict_clips(model, processor, clips[:2], output, batch_size=2, num_workers=0, progress=False)
    before = output.read_bytes()
    with pytest.raises(ValueError, match=r"out\.csv holds predictions of another model.*clip1\.mp4.*--no_resume"):
        predict_clips(other, processor, clips[:1], output, resume=False, num_workers=0, progress=False)
    assert output.read_bytes() == before and not list(tmp_path.glob(".out.part-*"))
    rows, summary = predict_clips(other, processor, clips[:2], output, resume=False, num_workers=0, progress=False)
    assert summary.predicted_now == 2 and [row["file"] for row in read_rows(output)] == clips[:2]
    assert all(list(row["probabilities"]) == ["anger", "disgust"] and row["threshold"] == 0.5 for row in rows)
    assert output.read_text().splitlines()[0].endswith("p_anger,p_disgust")
    # Rows of this model's other clips, and error rows (which carry no model), stay as before.
    again, _ = predict_clips(other, processor, clips[3:5], output, resume=False, num_workers=0, progress=False)
    assert again[0]["error"] and [row["file"] for row in read_rows(output)] == clips[3:5] + clips[:2]


def predict_command(run_cli, checkpoint, output, *arguments):
    """`predict.py` on the CPU, decoding in a thread, without a progress bar."""
    from hesp_hf.commands.predict import cli

    common = ["--cpu", "--num_workers", "0", "--no_progress", "--checkpoint", checkpoint, "--output", output]
    return run_cli(cli, "predict.py", *common, *arguments)


def error_line(done) -> str:
    """The one line of a command's user error (before it only the weights' loading bar), with no traceback."""
    *_, error, hint = done.stderr.strip().splitlines()
    assert error.startswith("predict.py: error: ") and hint.startswith("(set HESP_DEBUG")
    assert "Traceback" not in done.stderr
    return error


def test_command_no_resume_refuses_another_models_rows_in_one_line(checkpoint, clips, tmp_path, run_cli):
    # Another checkpoint's rows (another calibrated threshold) in the output; --no_resume on a part of its clips.
    model, processor = load(checkpoint)
    model.config.unknown_threshold = 0.5
    output = tmp_path / "out.jsonl"
    predict_clips(model, processor, clips[:2], output, batch_size=2, num_workers=0, progress=False)
    before = output.read_text()
    done = predict_command(run_cli, checkpoint, output, clips[0], "--no_resume")
    assert done.returncode == 2 and output.read_text() == before
    assert str(output) in error_line(done) and "another model" in error_line(done) and "--no_resume" in done.stderr
    done = predict_command(run_cli, checkpoint, output, clips[0], clips[1], "--no_resume")  # the advice, followed
    assert done.returncode == 0, done.stderr
    assert [row["threshold"] for row in read_rows(output)] == [pytest.approx(0.34)] * 2


def test_command_creates_the_output_folder(checkpoint, clips, tmp_path, run_cli):
    """An output in folders that do not exist yet: they are created; a folder that cannot be: one line naming the
    output (not the part file beside it)."""
    nested = tmp_path / "new" / "sub" / "p.jsonl"
    done = predict_command(run_cli, checkpoint, nested, clips[0])
    assert done.returncode == 0, done.stderr
    assert [row["file"] for row in read_rows(nested)] == [clips[0]] and not list(nested.parent.glob(".p.part-*"))
    (tmp_path / "afile").write_text("")
    done = predict_command(run_cli, checkpoint, tmp_path / "afile" / "p.jsonl", clips[0])
    assert done.returncode == 2 and f"Prediction output {tmp_path / 'afile' / 'p.jsonl'}" in error_line(done)
    assert ".part-" not in done.stderr
    # A file where the thumbnails' folder should be: refused before anything runs (it failed at the end before).
    done = predict_command(
        run_cli, checkpoint, tmp_path / "q.jsonl", clips[0], "--faces", "all", "--thumbnails", tmp_path / "afile"
    )
    assert done.returncode == 2 and f"--thumbnails {tmp_path / 'afile'} is a file: give a folder" in done.stderr
    assert not (tmp_path / "q.jsonl").exists()


def test_a_whole_last_row_without_its_newline_is_kept(checkpoint, clips, tmp_path):
    """Only a last line that is not a whole row is a torn tail: a row lacking just its newline (an output edited by
    hand or written by another tool, a part cut after its last character) is read, kept and not predicted again."""
    model, processor = load(checkpoint)
    rows, _ = predict_clips(model, processor, clips[:2], tmp_path / "out.jsonl", num_workers=0, progress=False)
    extra = {**rows[0], "file": "other_clip.mp4"}
    lines = [json.dumps(row) for row in [*rows, extra]]
    (tmp_path / "out.jsonl").write_text("\n".join(lines))
    assert read_rows(tmp_path / "out.jsonl") == [*rows, extra]
    (tmp_path / "torn.jsonl").write_text("\n".join(lines)[:-5])
    assert read_rows(tmp_path / "torn.jsonl") == rows
    predict_clips(model, processor, clips[2:3], tmp_path / "out.jsonl", num_workers=0, progress=False)
    assert extra in read_rows(tmp_path / "out.jsonl") and len(read_rows(tmp_path / "out.jsonl")) == 4

    # CSV: a whole last row is kept; one cut inside its last column (a probability) or before it is not.
    as_csv, _ = predict_clips(model, processor, clips[:3], tmp_path / "out.csv", num_workers=0, progress=False)
    text = (tmp_path / "out.csv").read_text().rstrip("\r\n")
    last_probability = text.rsplit(",", 1)[1]
    assert float(last_probability) > 0.01  # so that cutting it to its first digit takes a share off the row's sum
    for name, body, expected in [
        ("whole", text, as_csv),
        ("in-the-last-column", text[: len(text) - len(last_probability) + 1], as_csv[:2]),
        ("before-the-last-column", text.rsplit(",", 2)[0], as_csv[:2]),
    ]:
        (tmp_path / f"{name}.csv").write_text(body)
        assert read_rows(tmp_path / f"{name}.csv") == expected, name

    # A part whose last whole row lacks its newline: reused, and the new rows go on lines of their own.
    finished, _ = predict_clips(model, processor, clips[4:6], None, num_workers=0, progress=False)
    marked = [{**row, "label": "from-the-part"} for row in finished]
    (tmp_path / ".out.part-0-of-1.jsonl").write_text("\n".join(json.dumps(row) for row in marked))
    resumed, summary = predict_clips(model, processor, clips, tmp_path / "out.jsonl", num_workers=0, progress=False)
    assert resumed[4:6] == marked and summary.from_earlier_runs == 3 + 2  # clips 0-2 from the output
    assert [row["file"] for row in read_rows(tmp_path / "out.jsonl")] == [*clips, "other_clip.mp4"]


def test_csv_output_holds_the_jsonl_rows(checkpoint, clips, tmp_path):
    model, processor = load(checkpoint)
    as_json, _ = predict_clips(model, processor, clips, tmp_path / "out.jsonl", batch_size=4, num_workers=0)
    as_csv, _ = predict_clips(model, processor, clips, tmp_path / "out.csv", batch_size=4, num_workers=0)
    header = (tmp_path / "out.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["file", "label", "known"] and header[-len(LABELS) :] == [f"p_{k}" for k in LABELS]
    assert len(as_csv) == len(as_json)
    for csv_row, json_row in zip(as_csv, as_json, strict=True):
        json_row = {k: v for k, v in json_row.items() if k != "probabilities"} | {"p": json_row["probabilities"]}
        csv_row = {k: v for k, v in csv_row.items() if k != "probabilities"} | {"p": csv_row["probabilities"]}
        assert csv_row.keys() == json_row.keys()
        for key, value in json_row.items():
            if isinstance(value, float):
                assert csv_row[key] == pytest.approx(value, rel=1e-6)
            elif key == "p":
                assert csv_row[key] == pytest.approx(value, rel=1e-6)
            else:
                assert csv_row[key] == value, key


def test_list_clips_reads_folders_globs_lists_and_csvs(tmp_path):
    videos = tmp_path / "videos"
    a = write_video(videos / "a.mp4", random_video(2, 16, 16))
    b = write_video(videos / "sub" / "b.mp4", random_video(2, 16, 16))
    frames = videos / "frames_clip"
    frames.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(frames / "000001.jpg")
    (tmp_path / "list.txt").write_text("videos/a.mp4 2 1\n# a comment\n\nvideos/sub/b.mp4 2 3\n")
    (tmp_path / "list.csv").write_text("video_path,label\nvideos/sub/b.mp4,3\n")
    assert list_clips(videos) == sorted([str(a), str(b), str(frames)])
    assert list_clips(str(tmp_path / "videos" / "**" / "*.mp4")) == sorted([str(a), str(b)])
    assert list_clips(tmp_path / "list.txt") == [str(a), str(b)]
    assert list_clips([tmp_path / "list.csv", a, a]) == [str(b), str(a)]
    assert list_clips(frames) == [str(frames)]
    with pytest.raises(FileNotFoundError, match="missing.mp4 does not exist"):
        list_clips(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list_clips(str(tmp_path / "*.avi"))
    (tmp_path / "bad.csv").write_text("path,label\nx,1\n")
    with pytest.raises(ValueError, match="'video_path' column"):
        list_clips(tmp_path / "bad.csv")


def test_two_processes_give_the_single_process_rows(checkpoint, clips, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo) splits the clips by batch and merges one output: byte for byte
    the output of one process (batches of 3 over 8 clips, the broken one in the second: each process forms the very
    batches one process forms; one thread per process in both runs, since resizing and matrix products round
    differently on another thread count, by about 1e-7)."""
    (tmp_path / "clips.txt").write_text("\n".join(clips) + "\n")
    common = ["--checkpoint", str(checkpoint), str(tmp_path / "clips.txt"), "--batch_size", "3", "--no_progress"]
    script = str(REPO / "scripts" / "predict.py")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    for command in (
        [*launch, script, *common, "--output", str(tmp_path / "two.jsonl"), "--cpu"],
        [sys.executable, script, *common, "--output", str(tmp_path / "one.jsonl")],
    ):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    assert len(read_rows(tmp_path / "two.jsonl")) == len(clips)
    assert "could not be read" in done.stderr  # the summary is logged


def test_command_reports_user_errors_in_one_line(checkpoint, tmp_path, run_cli):
    from hesp_hf.commands.predict import cli

    def predict(*arguments):
        return run_cli(cli, "predict.py", "--checkpoint", *arguments)

    done = predict(checkpoint, "--output", tmp_path / "o.txt", "x.mp4")
    assert done.returncode == 2 and "--output must end in .jsonl or .csv" in done.stderr
    done = predict(checkpoint, "--output", tmp_path / "o.csv", "nope/*.mp4")
    assert done.returncode == 2 and "predict.py: error:" in done.stderr and "matches no file" in done.stderr
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    done = predict(checkpoint, "--output", tmp_path / "b.csv", broken)
    assert done.returncode == 2 and "none of the 1 clips could be read" in done.stderr
    assert read_rows(tmp_path / "b.csv")[0]["error"]  # the rows are written all the same
    done = predict(tmp_path / "no-such-run", "--output", tmp_path / "c.csv", broken)
    assert done.returncode == 2 and "no-such-run" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2  # the error and the HESP_DEBUG hint, no traceback


def test_face_crop_rows_say_whether_a_face_was_found(checkpoint, tmp_path):
    """With `face_crop`, each row records whether the clip had a face: a drawn face in a scene has one, a blank clip
    none (used whole, never an error)."""
    pytest.importorskip("cv2")
    import numpy as np

    from hesp_hf.embedded.synthetic import place_in_scene, render_clip

    model, processor = load(checkpoint)
    processor.face_crop, processor.face_min_score = True, 0.1  # drawn faces score low
    faces, _ = render_clip("happiness", 4, 8, 64)
    scene, _ = place_in_scene(faces, 4, 144)
    with_face = str(write_video(tmp_path / "scene.mp4", scene, fps=8))
    blank = np.full((8, 144, 144, 3), 128, dtype=np.uint8)  # noise can score 0.1 as a face; a blank frame cannot
    without = str(write_video(tmp_path / "blank.mp4", blank, fps=8))
    rows, _ = predict_clips(model, processor, [with_face, without], batch_size=2, num_workers=0, progress=False)
    assert [row["face_found"] for row in rows] == [True, False]
    assert all(row["error"] == "" and row["label"] for row in rows)


def test_onnx_export_without_the_extra_names_it(checkpoint, tmp_path, monkeypatch):
    import importlib.util

    from hesp_hf.inference.export import export_onnx

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else find_spec(name)
    )
    with pytest.raises(ImportError, match=r"onnxscript.*pip install hesp-hf\[onnx\]"):
        export_onnx(str(checkpoint), tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
