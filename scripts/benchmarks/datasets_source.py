"""datasets: clips/s to read every clip of a `datasets` split through the data path (`clip_dataset` + `ClipTransform`:
decode 8 frames, resize, normalise; batches of 8, no workers) when the split is streamed (`--streaming`: an
`IterableDataset` over the saved dataset, clips decoded as the stream passes them), against the same split loaded
map-style from the same `save_to_disk` folder. The clips are 2-second 320x240 H.264 videos held as bytes in a
`Video` column, so both read the same bytes through the same decoder; the ratio is the cost of streaming."""

from pathlib import Path

from torch.utils.data import DataLoader

from .fixtures import synthetic_frames
from .harness import Settings, best_times_in_rotation


def saved_dataset(folder: Path, clips: int) -> Path:
    """A DatasetDict (train, test) with `clips` training clips as bytes in a `Video` column, saved once."""
    import datasets

    from hesp_hf.embedded.video_writer import write_video

    if (folder / "dataset_dict.json").exists():
        return folder
    names = ["calm", "smile", "frown", "gasp"]
    frames = synthetic_frames(50, 240, 320)
    scratch = folder.parent / "datasets_source_clip.mp4"
    write_video(scratch, frames, fps=25)
    data = scratch.read_bytes()
    features = datasets.Features({"video": datasets.Video(), "label": datasets.ClassLabel(names=names)})

    def split(count: int) -> datasets.Dataset:
        table = {"video": [{"bytes": data, "path": None}] * count, "label": [i % 4 for i in range(count)]}
        return datasets.Dataset.from_dict(table, features=features)

    datasets.DatasetDict({"train": split(clips), "test": split(4)}).save_to_disk(str(folder))
    return folder


def benchmark_datasets_source(quick: bool, workdir: Path) -> tuple[list[dict], dict[str, float]]:
    from hesp_hf import HESPVideoProcessor
    from hesp_hf.data import ClipTransform, clip_dataset, collate_clips
    from hesp_hf.data.hf_datasets import DatasetSource, read_source

    clips = 16 if quick else 64
    folder = saved_dataset(workdir / f"hf_dataset_{clips}", clips)
    processor = HESPVideoProcessor(num_frames=8)
    transform = ClipTransform(processor, training=False)

    def reader(streaming: bool):
        source = DatasetSource(name=str(folder), streaming=streaming)
        records = read_source(source, ["train"]).records["train"]

        def read_all() -> int:
            loader = DataLoader(clip_dataset(records, transform), batch_size=8, collate_fn=collate_clips)
            return sum(len(batch["labels"]) for batch in loader)

        assert read_all() == clips, "a clip went missing"
        return read_all

    times = best_times_in_rotation({"map": reader(False), "stream": reader(True)}, 2 if quick else 3)
    ratio = times["map"] / times["stream"]
    what = (
        f"read {clips} clips (8 frames, 224 px) of a saved Video-bytes split: streamed {clips / times['stream']:.1f} "
        f"clips/s, against map-style {clips / times['map']:.1f} clips/s (ratio < 1: streaming is slower)"
    )
    return [{"what": what, "seconds": times["stream"], "ratio": ratio}], {
        "datasets.stream_speed_over_map_style": ratio
    }


def run(settings: Settings):
    return benchmark_datasets_source(settings.quick, settings.workdir)
