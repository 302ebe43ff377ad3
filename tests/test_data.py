"""Data layer: the three layouts, presets and splits, re-indexing, sampling, augmentation, bad data, datasets."""

import csv
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hesp_hf import HESPVideoProcessor, VideoDecodeError
from hesp_hf.data import (
    AnnotationError,
    ClipAugmentation,
    ClipTransform,
    clip_dataset,
    collate_clips,
    get_preset,
    load_open_set_split,
    read_annotation,
    read_clip_log,
    sample_clip,
)
from hesp_hf.data.presets import PRESETS
from hesp_hf.data.protocol import make_open_set_split
from hesp_hf.embedded.video_writer import write_video
from hesp_hf.modeling.video_decoding_hesp import decode_video_at


MAFW = PRESETS["mafw"]


def indexed_frames(count, size=32):
    """Frames whose index is written into the pixel values (index * 10 everywhere in frame `index`)."""
    return np.stack([np.full((size, size, 3), (i * 10) % 256, dtype=np.uint8) for i in range(count)])


def write_frame_folder(folder, count, size=32):
    folder.mkdir(parents=True)
    for i, frame in enumerate(indexed_frames(count, size)):
        Image.fromarray(frame).save(folder / f"img_{i:05d}.png")
    return folder


@pytest.fixture
def list_layout(tmp_path):
    """MAFW-like frame folders + list files: 2 clips per class in train, 1 per class in test."""
    lines = {"train": [], "test": []}
    for split, per_class in (("train", 2), ("test", 1)):
        for label in range(MAFW.num_classes):
            for n in range(per_class):
                name = f"{split}/{label:02d}_{n}"
                write_frame_folder(tmp_path / "frames" / name, count=3 + label)
                lines[split].append(f"frames/{name} {3 + label} {label} {MAFW.class_names[label]}")
    for split in lines:
        (tmp_path / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    return tmp_path


def test_presets_hold_the_released_splits():
    dfew, afew = PRESETS["dfew"], PRESETS["afew"]
    assert dfew.class_names == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    assert MAFW.class_names[10] == "disappointment" and MAFW.num_classes == 11
    assert [len(s) for s in MAFW.open_set_splits] == [3] * 5 + [5] * 5 + [6] * 5 + [8] * 5
    assert [len(s) for s in afew.open_set_splits] == [2] * 5 + [3] * 5 + [4] * 5 + [5] * 5
    assert MAFW.open_set_splits[0] == (10, 5, 6) and MAFW.open_set_splits[19] == (2, 3, 6, 0, 7, 9, 10, 1)
    assert afew.open_set_splits[10] == (6, 0, 3, 5) and afew.open_set_splits[19] == (4, 6, 2, 1, 0)
    assert dfew.open_set_splits[0] == (6, 1) and dfew.open_set_splits[17] == (0, 6, 5, 4, 3)
    for preset in (dfew, afew, MAFW):
        assert len(preset.open_set_splits) == 20
        assert all(len(set(s)) == len(s) and max(s) < preset.num_classes for s in preset.open_set_splits)
    with pytest.raises(ValueError, match="custom"):
        get_preset("mafw", class_names=["a", "b"])
    with pytest.raises(ValueError, match="Unknown dataset preset"):
        get_preset("kinetics")


def test_custom_class_names_are_named_by_their_option_and_differ_without_case():
    """Labels in annotations match class names without case, so `anger` and `Anger` would be one class: refused,
    naming both and the option (`--label_names` is another option: the Trainer's label keys)."""
    with pytest.raises(ValueError, match=r"needs its class names in index order \(--class_names"):
        get_preset("custom")
    with pytest.raises(ValueError, match=r"^--class_names must be distinct.*'anger' and 'Anger'"):
        get_preset("custom", ["anger", "Anger", "fear"])
    with pytest.raises(ValueError, match=r"'fear' and 'fear'"):
        get_preset("custom", ["fear", "anger", "fear"])
    assert get_preset("custom", ["Anger", "fear"]).class_names == ("Anger", "fear")


def test_list_layout_and_label_order(list_layout):
    split = load_open_set_split("mafw", list_layout / "train.txt", list_layout / "test.txt", split_index=0, seed=3)
    # known (10, 5, 6) -> labels in original-index order: sadness 0, surprise 1, disappointment 2
    assert split.known_classes == (5, 6, 10)
    assert split.known_labels == ["sadness", "surprise", "disappointment"]
    assert {r.label for r in split.train + split.validation} == {0, 1, 2}
    assert all(r.original_label == split.known_classes[r.label] for r in split.train + split.validation)
    assert len(split.train) + len(split.validation) == 6 and len(split.validation) == 3  # one of each class held out
    test_known = [r for r in split.test if r.label != -1]
    assert len(test_known) == 3 and len(split.test) == 11
    assert {r.original_label for r in split.test if r.label == -1} == set(range(11)) - {5, 6, 10}
    assert "disappointment" in split.summary() and "unknown" in split.summary()


def test_validation_holdout_is_stratified_and_seeded(list_layout):
    records = read_annotation(list_layout / "train.txt", MAFW) * 5  # 10 clips per class
    records = [r.__class__(f"{r.path}#{i}", r.label, r.num_frames, r.source, i) for i, r in enumerate(records)]
    split = make_open_set_split(
        MAFW, records, records, known_labels=["anger", "fear"], validation_fraction=0.2, seed=1
    )
    again = make_open_set_split(
        MAFW, records, records, known_labels=["anger", "fear"], validation_fraction=0.2, seed=1
    )
    other = make_open_set_split(
        MAFW, records, records, known_labels=["anger", "fear"], validation_fraction=0.2, seed=2
    )
    assert [r.label for r in split.validation].count(0) == 2 and [r.label for r in split.validation].count(1) == 2
    assert split.validation == again.validation and split.validation != other.validation
    assert not {r.path for r in split.validation} & {r.path for r in split.train}


def test_csv_layout_with_names_and_indices(tmp_path):
    rows = []
    for i, label in enumerate(["happy", "3", "Sad", "1", "0"]):  # DFEW numbering: 1..7, 0 = excluded
        write_video(tmp_path / "clips" / f"{i}.mp4", indexed_frames(4))
        rows.append({"video_path": f"clips/{i}.mp4", "label": label})
    with (tmp_path / "train.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video_path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    records = read_annotation(tmp_path / "train.csv", PRESETS["dfew"])
    assert [r.label for r in records] == [0, 2, 1, 0]  # happy, 3->neutral, sad, 1->happy; the 0 row is excluded
    assert records[1].line == 3


def test_annotations_saved_by_spreadsheets_read_and_other_encodings_name_their_line(tmp_path):
    """ "CSV UTF-8" from a spreadsheet starts with a byte-order mark (its header read '\\ufeffvideo_path' before); a
    Latin-1 file is one line naming the file and the line of the first byte that is not UTF-8 -- for training's
    annotations and for hesp-predict's CSVs and lists alike."""
    from hesp_hf.inference.clips import list_clips

    for i in range(2):
        write_video(tmp_path / "clips" / f"{i}.mp4", indexed_frames(4))
    (tmp_path / "excel.csv").write_bytes("video_path,label\nclips/0.mp4,happy\nclips/1.mp4,Sad\n".encode("utf-8-sig"))
    assert [r.label for r in read_annotation(tmp_path / "excel.csv", PRESETS["dfew"])] == [0, 1]
    assert list_clips(tmp_path / "excel.csv") == [str(tmp_path / "clips" / "0.mp4"), str(tmp_path / "clips" / "1.mp4")]
    (tmp_path / "excel.txt").write_bytes("clips/1.mp4 4 2\n".encode("utf-8-sig"))
    assert [r.label for r in read_annotation(tmp_path / "excel.txt", PRESETS["dfew"])] == [1]
    assert list_clips(tmp_path / "excel.txt") == [str(tmp_path / "clips" / "1.mp4")]
    latin = "video_path,label\nclips/0.mp4,happy\nclips/caf\u00e9.mp4,sad\n".encode("latin-1")
    for name in ("latin.csv", "latin.txt"):
        (tmp_path / name).write_bytes(latin if name.endswith("csv") else latin.replace(b",", b" 4 "))
        expected = rf"^{re.escape(str(tmp_path / name))}:3: not UTF-8 text \(byte 0xe9\): save the file as UTF-8\.$"
        with pytest.raises(ValueError, match=expected):
            read_annotation(tmp_path / name, PRESETS["dfew"])
        with pytest.raises(ValueError, match=expected):
            list_clips(tmp_path / name)


def test_class_folder_layout(tmp_path):
    for name in ("Angry", "Happy", "Surprise"):
        for n in range(2):
            write_video(tmp_path / "Train" / name / f"{n}.avi", indexed_frames(3), codec="mpeg4")
    records = read_annotation(tmp_path / "Train", PRESETS["afew"])
    assert sorted({(r.label, len([x for x in records if x.label == r.label])) for r in records}) == [
        (0, 2),
        (3, 2),
        (6, 2),
    ]


def test_every_annotation_problem_is_reported_at_once(tmp_path):
    write_frame_folder(tmp_path / "ok", 3)
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "bad.txt").write_text(
        "ok 3 1\n"  # fine
        "missing 3 2\n"  # missing clip
        "ok 3 1\n"  # duplicate
        "ok 3 11\n"  # out of range
        "empty_dir 4 0\n"  # zero frames on disk
        "ok 0 2\n"  # zero frames in the list
        "ok 3 joy\n"  # unknown label name
    )
    with pytest.raises(AnnotationError) as caught:
        read_annotation(tmp_path / "bad.txt", MAFW)
    problems = caught.value.problems
    expected = [
        ("bad.txt:2", "missing clip"),
        ("bad.txt:3", "duplicate entry"),
        ("bad.txt:4", "label index 11 out of range 0..10"),
        ("bad.txt:5", "zero frames"),
        ("bad.txt:6", "has 0 frames"),
        ("bad.txt:7", "unknown label name 'joy'"),
    ]
    for where, what in expected:
        assert any(where in p and what in p for p in problems), (where, what, problems)
    assert len(problems) == len(expected)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(AnnotationError, match="empty list"):
        read_annotation(tmp_path / "empty.txt", MAFW)
    (tmp_path / "bad.csv").write_text("path,emotion\nx.mp4,happy\n")
    with pytest.raises(AnnotationError, match="video_path"):
        read_annotation(tmp_path / "bad.csv", MAFW)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("video_path,label,label", "repeated ['label']"),
        ("video_path,label,subject", "unexpected ['subject']"),
        ("video_path", "missing ['label']"),
    ],
)
def test_csv_header_must_be_exact(tmp_path, header, message):
    """A repeated column used to be read silently as its last occurrence (every clip took one class)."""
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "train.csv").write_text(f"{header}\nclip.mp4,happy,sad\n")
    with pytest.raises(AnnotationError) as error:
        read_annotation(tmp_path / "train.csv", MAFW)
    assert f"{tmp_path / 'train.csv'}:1:" in str(error.value) and message in str(error.value)


def test_known_class_without_training_clips_is_refused(list_layout):
    train = [r for r in read_annotation(list_layout / "train.txt", MAFW) if r.label != 3]  # no 'happiness' clip
    test = read_annotation(list_layout / "test.txt", MAFW)
    known = [MAFW.class_names[i] for i in (0, 3, 5)]
    with pytest.raises(ValueError, match=r"\['happiness'\] have no clip in the training list .*train.txt"):
        make_open_set_split(MAFW, train, test, known_labels=known)
    split = make_open_set_split(MAFW, train, test, known_labels=known, allow_empty_known_classes=True)
    assert sorted({r.label for r in split.train + split.validation}) == [0, 2]


def test_both_lists_are_checked_together(list_layout):
    (list_layout / "broken.txt").write_text("nowhere 3 1\n")
    with pytest.raises(AnnotationError) as caught:
        load_open_set_split("mafw", list_layout / "broken.txt", list_layout / "nothing.txt", split_index=0)
    assert len(caught.value.problems) == 2


def test_split_selection_errors():
    with pytest.raises(ValueError, match="exactly one"):
        make_open_set_split(MAFW, [], [], split_index=1, known_labels=["anger"])
    with pytest.raises(ValueError, match="0..19"):
        make_open_set_split(MAFW, [], [], split_index=20)
    with pytest.raises(ValueError, match="no released open-set lists"):
        make_open_set_split(PRESETS["ferv39k"], [], [], split_index=0)
    with pytest.raises(ValueError, match="not classes"):
        make_open_set_split(MAFW, [], [], known_labels=["joy"])


def test_sampling_reads_the_right_frames(tmp_path):
    folder = write_frame_folder(tmp_path / "clip", 16)
    video = write_video(tmp_path / "clip.mkv", indexed_frames(16), codec="ffv1", pix_fmt="bgr0")
    for path in (folder, video):  # a folder by index, a file by time: the same frames for a constant rate
        frames = sample_clip(path, 4).frames
        assert (frames[:, 0, 0, 0] // 10).tolist() == [2, 6, 10, 14]  # on screen at the segment centres
        stretched = [int((k + 0.5) * 16 / 20) for k in range(20)]  # more samples than frames
        assert (sample_clip(path, 20).frames[:, 0, 0, 0] // 10).tolist() == stretched
    short = write_frame_folder(tmp_path / "short", 3)
    assert (sample_clip(short, 5).frames[:, 0, 0, 0] // 10).tolist() == [0, 0, 1, 2, 2]


@pytest.mark.parametrize("keyint", [1, 4, 250])
def test_seeking_decoder_equals_decoding_every_frame(tmp_path, keyint):
    """Seeking to keyframes, going on past them and skipping unneeded frames gives exactly the frames a plain decode
    of the whole file shows at the same moments (B-frames reordered, keyframes every frame / every 4 / once)."""
    import av

    rng = np.random.default_rng(keyint)
    frames = rng.integers(0, 256, (30, 48, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / "clip.mp4", frames, options={"g": str(keyint), "bf": "3"})
    with av.open(str(path)) as container:
        reference = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    for indices in ([0, 29], [5, 6, 7, 8], [28, 3, 3, 17, 11], rng.integers(0, 30, 12).tolist()):
        positions = (np.asarray(indices) + 0.5) / 30  # the middle of each frame's time
        decoded = decode_video_at(path, positions)
        assert decoded.metadata.total_num_frames == 30 and not decoded.truncated
        np.testing.assert_array_equal(decoded.frames, np.stack([reference[i] for i in indices]))
        np.testing.assert_allclose(decoded.timestamps, np.asarray(indices) / 25)


def test_augmentation_is_the_same_for_every_frame():
    frames = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 40, 50, 3), dtype=np.uint8), 6, axis=0)
    augment = ClipAugmentation(size=(24, 24), scale=(0.2, 0.6))
    outputs = [augment(frames, torch.Generator().manual_seed(seed)) for seed in range(6)]
    for out in outputs:
        assert out.shape == (6, 3, 24, 24) and out.dtype == torch.uint8
        assert all(torch.equal(out[0], out[t]) for t in range(6))  # identical frames stay identical
    assert len({out.numpy().tobytes() for out in outputs}) > 1  # but clips differ
    again = augment(frames, torch.Generator().manual_seed(3))
    assert torch.equal(again, outputs[3])  # reproducible by seed
    flip_only = ClipAugmentation(size=(40, 50), scale=(1.0, 1.0), ratio=(50 / 40, 50 / 40), flip_probability=1.0)
    assert torch.equal(flip_only(frames)[0], torch.as_tensor(frames[0]).permute(2, 0, 1).flip(-1))


def test_dataset_trainer_and_dataloader(list_layout, tiny_clip_dir):
    split = load_open_set_split("mafw", list_layout / "train.txt", list_layout / "test.txt", split_index=5)
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    augmentation = ClipAugmentation(size=(32, 32))
    train = clip_dataset(split.train, ClipTransform(processor, training=True, augmentation=augmentation))
    test = clip_dataset(split.test, ClipTransform(processor, training=False))
    item = train[0]
    assert item["pixel_values_videos"].shape == (4, 3, 32, 32) and item["labels"] == split.train[0].label
    loader = DataLoader(test, batch_size=4, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    assert sum(len(b["labels"]) for b in batches) == len(split.test)
    assert batches[0]["pixel_values_videos"].shape == (4, 4, 3, 32, 32)
    assert torch.cat([b["labels"] for b in batches]).tolist() == [r.label for r in split.test]


def test_bad_clips_raise_or_are_skipped_and_counted(tmp_path, tiny_clip_dir):
    good = write_video(tmp_path / "good.mp4", indexed_frames(5))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes()[:200])
    records = read_annotation(_csv(tmp_path, ["good.mp4", "bad.mp4", "good2.mp4"], good), MAFW)
    processor = HESPVideoProcessor.from_clip(str(tiny_clip_dir), num_frames=4)
    strict = clip_dataset(records, ClipTransform(processor, training=False))
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        strict[1]
    log = tmp_path / "logs" / "clip_report.tsv"
    transform = ClipTransform(processor, training=False, on_bad_clip="skip", clip_log=log, split="test")
    lenient = clip_dataset(records, transform)
    batches = list(DataLoader(lenient, batch_size=3, num_workers=1, collate_fn=collate_clips))
    assert batches[0]["labels"].tolist() == [records[0].label, records[2].label]
    assert read_clip_log(log).skipped == {"test": [str(bad)]}


def _csv(root, names, source):
    for name in names:
        if not (root / name).exists():
            (root / name).write_bytes(source.read_bytes())
    (root / "list.csv").write_text("video_path,label\n" + "".join(f"{n},{i}\n" for i, n in enumerate(names)))
    return root / "list.csv"
