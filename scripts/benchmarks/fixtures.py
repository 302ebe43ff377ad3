"""Inputs the sections share: ViT-B/32-size HESP models on random towers, synthetic 720p-like frames, large test
files, the demo's test list."""

from pathlib import Path

import numpy as np


def synthetic_frames(count: int, height: int, width: int) -> np.ndarray:
    """A moving textured scene with sensor-like noise, so the encoder produces real motion-compensated P/B frames
    with residuals, as camera footage does (a clean synthetic scene decodes unrealistically fast)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    base = ((np.sin(rows / 23.0) + np.cos(cols / 31.0)) * 60 + 128).astype(np.float32)
    video = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        shifted = np.roll(base, (2 * t, 3 * t), axis=(0, 1))
        video[t, ..., 0] = shifted
        video[t, ..., 1] = np.roll(shifted, 17, axis=1)
        video[t, ..., 2] = 255 - shifted
        top, left = (t * 5) % (height - 80), (t * 9) % (width - 80)
        video[t, top : top + 80, left : left + 80] = (230, 40, 40)
        noise = rng.integers(-3, 4, (height, width, 1), dtype=np.int16)
        video[t] = np.clip(video[t].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return video


def vit_b32_models(
    quick: bool, patch_size: int = 32, poolings: tuple[str, ...] = ("mean", "attention")
) -> dict[str, object]:
    """HESP models on one set of random ViT-B/32-size towers (quick: 4 layers), for each temporal pooling."""
    import tempfile

    import torch
    from transformers import CLIPConfig

    from hesp_hf import HESPConfig, HESPForOpenSetVideoClassification
    from hesp_hf.embedded.tiny_clip import save_char_tokenizer

    torch.manual_seed(0)
    layers = 4 if quick else 12
    clip_config = CLIPConfig(
        text_config={"num_hidden_layers": layers, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"num_hidden_layers": layers, "patch_size": patch_size},
    )  # ViT-B/32 (or B/16 with --patch_size 16): width 768, 224x224; text width 512
    tokenizer = save_char_tokenizer(tempfile.mkdtemp())
    labels = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
    models = {}
    for pooling in poolings:
        config = HESPConfig.from_clip_config(clip_config, labels, tokenizer, temporal_pooling=pooling)
        models[pooling] = HESPForOpenSetVideoClassification(config).eval()
        # One set of tower weights for all, so every row measures the same CLIP.
        models[pooling].load_state_dict(models[poolings[0]].state_dict(), strict=False)
    return models


def demo_test_list() -> str:
    """The test list `make demo` writes (its synthetic spec: the defaults, under outputs/synthetic)."""
    from hesp_hf.embedded.synthetic import SyntheticSpec

    return str(Path("outputs/synthetic") / f"synthetic-{SyntheticSpec().key()}" / "test.csv")


def write_large_video(path: Path, megabytes: int, height: int, width: int) -> None:
    """A large H.264 file made cheaply: 25 noisy intra-coded frames encoded once, their packets muxed again and again
    with later timestamps (no re-encoding) until the file has the size, its index at the end as cameras write it."""
    import av

    from hesp_hf.atomic_files import atomic_output
    from hesp_hf.embedded.video_writer import write_video

    source = path.with_suffix(".source.mp4")
    noise = np.random.default_rng(0).integers(0, 256, (25, height, width, 3), dtype=np.uint8)
    write_video(source, noise, options={"g": "1", "qp": "4", "preset": "ultrafast"})
    with av.open(str(source)) as reader:
        template = reader.streams.video[0]
        packets = [packet for packet in reader.demux(template) if packet.size]
        with atomic_output(path) as temporary, av.open(str(temporary), "w") as writer:
            stream = writer.add_stream_from_template(template)
            written, repeat = 0, 0
            while written < megabytes * 2**20:
                for packet in packets:
                    packet.pts, packet.dts = packet.pts + repeat * 25 * packet.duration, None
                    packet.stream = stream
                    writer.mux(packet)
                    written += packet.size
                    packet.pts -= repeat * 25 * packet.duration
                repeat += 1
    source.unlink()


def every_packet(path: Path) -> int:
    """Demux every packet of a file into a list (what sampling cost before streaming): the memory baseline."""
    import av

    with av.open(str(path)) as container:
        packets = [packet for packet in container.demux(container.streams.video[0]) if packet.size]
        return sum(packet.size for packet in packets)


def linked_720p_clips(workdir: Path, quick: bool, count: int) -> list[str]:
    """`count` 10 s 720p H.264 clips (quick: 4 s at 360p), a keyframe a second: one encoded file hard-linked under
    separate names, as an archive holds separate files."""
    import os

    source = workdir / "clip_keyint25.mp4"
    if not source.exists():
        from hesp_hf.embedded.video_writer import write_video

        seconds, (height, width) = (4, (360, 640)) if quick else (10, (720, 1280))
        write_video(source, synthetic_frames(seconds * 25, height, width), fps=25, options={"g": "25"})
    copies = workdir / "predict"
    copies.mkdir(exist_ok=True)
    clips = []
    for index in range(count):
        link = copies / f"clip{index:03d}.mp4"
        if not link.exists():
            os.link(source, link)
        clips.append(str(link))
    return clips
