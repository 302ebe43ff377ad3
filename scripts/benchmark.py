"""Side-by-side benchmarks: each row is measured against its baseline in the same run and reported as a ratio.

    python scripts/benchmark.py [--quick] [--json FILE]

Sections:
- metric: OSCR + AUROC of `hesp_hf.metrics.open_set_metrics` on N = 1,000,000 predictions, and its speed-up over the
  O(n^2) definition loop (one count over all samples per threshold, as the widely copied ARPL code does) at N = 20,000.
- inference: clips/s of HESP (each visual-prompt location and temporal pooling) against the bare CLIP vision tower
  with mean pooling, on random-weight towers of ViT-B/32 size, 8 frames per clip, float32 and bfloat16 autocast.
- train: one HESP training step split into its parts, against three bare forward passes of the frames.
- memory: peak memory added by a training step (resident memory sampled every millisecond on a CPU, the allocator's
  peak on CUDA) and the activations autograd keeps for backward, with and without activation checkpointing
  (subprocesses).
- decode: clips/s to sample 8 frames (segment centres) from a 10-second 720p H.264 clip with `hesp_hf.data.sample_clip`
  against `transformers.video_utils.load_video(..., backend="pyav")` with the same indices; for a clip with a keyframe
  every second (camera and streaming video) and one with x264's default single keyframe per 250 frames; from a
  folder of 250 JPEG frames against opening every frame of the folder; and the resident memory added by sampling a
  700 MB H.264 file (120 MB with --quick) against holding its packets.

Absolute times are printed with the machine they came from; compare ratios, not seconds, across machines.
"""

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hesp_hf.atomic_files import write_text_atomic
from hesp_hf.metrics import load_oscr_metric, open_set_metrics


def best_time(function: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs (the least disturbed by other load on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def open_set_problem(n: int, k: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    references = rng.integers(0, k, n)
    references[rng.random(n) < 0.3] = -1
    known = references >= 0
    logits[known, references[known]] += 1.5
    return logits, references


def definition_loop_oscr(logits: np.ndarray, references: np.ndarray) -> float:
    """OSCR by its definition, one pass over all samples per threshold: O(n^2)."""
    scores = logits.max(axis=1).astype(np.float64)
    known = references != -1
    correct = known & (logits.argmax(axis=1) == references)
    points = [(0.0, 0.0)]
    for threshold in np.unique(scores)[::-1]:
        accepted = scores >= threshold
        points.append(((accepted & ~known).sum() / (~known).sum(), (accepted & correct).sum() / known.sum()))
    points = np.array(points)
    return float(np.sum(np.diff(points[:, 0]) * (points[1:, 1] + points[:-1, 1]) / 2))


def benchmark_metric(quick: bool) -> tuple[list[dict], dict[str, float]]:
    large, small = (100_000, 4_000) if quick else (1_000_000, 20_000)
    logits, references = open_set_problem(large)
    fast_large = best_time(lambda: open_set_metrics(logits, references), repeats=3)
    module = load_oscr_metric()
    through_evaluate = best_time(lambda: module.compute(predictions=logits, references=references), repeats=3)
    small_logits, small_references = logits[:small], references[:small]
    fast_small = best_time(lambda: open_set_metrics(small_logits, small_references), repeats=5)
    naive_small = best_time(lambda: definition_loop_oscr(small_logits, small_references), repeats=1)
    agreement = abs(
        open_set_metrics(small_logits, small_references)["oscr"] - definition_loop_oscr(small_logits, small_references)
    )
    rows = [
        {"what": f"open_set_metrics (ACC+AUROC+OSCR+FPR95), N={large:,}", "seconds": fast_large, "ratio": None},
        {"what": f"open_set_metrics, N={small:,}", "seconds": fast_small, "ratio": None},
        {
            "what": f"the same through the `evaluate` module, N={large:,} (baseline: the pure function)",
            "seconds": through_evaluate,
            "ratio": fast_large / through_evaluate,
        },
        {
            "what": f"O(n^2) definition loop, N={small:,} (|OSCR diff| {agreement:.1e})",
            "seconds": naive_small,
            "ratio": naive_small / fast_small,
        },
    ]
    key = "metric.speedup_over_naive_20k" if not quick else "metric.speedup_over_naive_quick"
    return rows, {
        key: naive_small / fast_small,
        "metric.seconds_1m" if not quick else "metric.seconds_quick": fast_large,
        "metric.evaluate_over_pure": through_evaluate / fast_large,
    }


def benchmark_decode(quick: bool, workdir: Path) -> tuple[list[dict], dict[str, float]]:
    from PIL import Image
    from transformers.video_utils import load_video

    from hesp_hf.data import sample_clip
    from hesp_hf.data.annotations import frame_files
    from hesp_hf.modeling.video_decoding_hesp import segment_indices
    from hesp_hf.video_writer import write_video

    seconds, fps = (4, 25) if quick else (10, 25)
    height, width = (360, 640) if quick else (720, 1280)
    frames = synthetic_frames(seconds * fps, height, width)
    rows, ratios = [], {}
    for name, keyint in (("keyframe every 1 s", fps), ("x264 default keyint=250", 250)):
        path = workdir / f"clip_keyint{keyint}.mp4"
        if not path.exists():
            write_video(path, frames, fps=fps, options={"g": str(keyint), "preset": "veryfast"})

        def ours(path=path):
            return sample_clip(path, 8).frames

        def stock(path=path):
            return load_video(
                str(path),
                backend="pyav",
                sample_indices_fn=lambda metadata, **_: segment_indices(metadata.total_num_frames, 8),
            )[0]

        assert np.array_equal(ours(), stock()), "the two readers disagree"
        repeats = 2 if quick else 3
        t_ours, t_stock = best_time(ours, repeats), best_time(stock, repeats)
        rows.append(
            {
                "what": f"8 of {len(frames)} frames, {width}x{height} H.264, {name}: load_video(pyav) {1 / t_stock:.1f} clips/s, ours {1 / t_ours:.1f} clips/s",
                "seconds": t_ours,
                "ratio": t_stock / t_ours,
            }
        )
        ratios[f"decode.speedup_over_load_video{'' if keyint == fps else '_keyint250'}"] = t_stock / t_ours
    rows_face, ratios_face = benchmark_face_crop(workdir / f"clip_keyint{fps}.mp4")
    rows += rows_face
    ratios.update(ratios_face)
    folder = workdir / "frames"
    if not folder.exists():
        folder.mkdir()
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=90)

    def every_frame():
        return [np.asarray(Image.open(file).convert("RGB")) for file in frame_files(folder)]

    t_folder, t_all = best_time(lambda: sample_clip(folder, 8), 3), best_time(every_frame, 1)
    rows.append(
        {
            "what": f"8 of {len(frames)} JPEG frames from a folder, {1 / t_folder:.1f} clips/s, against reading every frame",
            "seconds": t_folder,
            "ratio": t_all / t_folder,
        }
    )
    ratios["decode.frame_folder_speedup_over_reading_all"] = t_all / t_folder

    large = workdir / ("large_quick.mp4" if quick else "large.mp4")
    if not large.exists():
        write_large_video(large, megabytes=120 if quick else 700, height=height, width=width)
    size_mb = large.stat().st_size / 2**20
    streamed = peak_rss_added(lambda: sample_clip(large, 8)) / 2**20
    held = peak_rss_added(lambda: every_packet(large)) / 2**20
    rows.append(
        {
            "what": f"resident memory added sampling 8 frames of a {size_mb:.0f} MiB H.264 file: {streamed:.0f} MB "
            f"streamed, against {held:.0f} MB holding every packet (the reader before issue 12)",
            "seconds": None,
            "ratio": held / max(streamed, 1.0),
        }
    )
    ratios["decode.large_file_mb"] = size_mb
    ratios["decode.large_file_rss_added_mb"] = streamed
    ratios["decode.large_file_rss_reduction_over_holding_packets"] = held / max(streamed, 1.0)
    return rows, ratios


def benchmark_face_crop(clip: Path) -> tuple[list[dict], dict[str, float]]:
    """Face detection + tracking + cropping (`face_crop=True`) on the 8 frames sampled from a 720p clip, against
    decoding those 8 frames. A synthetic face is pasted into the frames so that the crop runs too."""
    try:
        from hesp_hf.modeling.face_cropping_hesp import crop_to_track, face_track, shared_detector

        detector = shared_detector()
    except ImportError as error:
        return [{"what": f"face crop: skipped ({error})", "seconds": None, "ratio": None}], {}
    from hesp_hf.data import sample_clip
    from hesp_hf.synthetic import render_clip

    frames = sample_clip(clip, 8).frames.copy()
    faces, _ = render_clip("happiness", 0, 8, 240)
    frames[:, 200:440, 500:740] = faces

    def crop() -> np.ndarray:
        return crop_to_track(frames, face_track(frames, detector), 224)

    t_decode, t_crop = best_time(lambda: sample_clip(clip, 8), 3), best_time(crop, 3)
    what = (
        f"face detection + crop of the 8 sampled {frames.shape[2]}x{frames.shape[1]} frames (YuNet at 640 px): "
        f"{t_crop * 1000:.0f} ms, against {t_decode * 1000:.0f} ms decoding them (share of decoding; target <= 0.5)"
    )
    return [{"what": what, "seconds": t_crop, "ratio": t_crop / t_decode}], {
        "decode.face_crop_share_of_decode": t_crop / t_decode
    }


def every_packet(path: Path) -> int:
    """Demux every packet of a file into a list (what sampling cost before streaming): the memory baseline."""
    import av

    with av.open(str(path)) as container:
        packets = [packet for packet in container.demux(container.streams.video[0]) if packet.size]
        return sum(packet.size for packet in packets)


def write_large_video(path: Path, megabytes: int, height: int, width: int) -> None:
    """A large H.264 file made cheaply: 25 noisy intra-coded frames encoded once, their packets muxed again and again
    with later timestamps (no re-encoding) until the file has the size, its index at the end as cameras write it."""
    import av

    from hesp_hf.atomic_files import atomic_output
    from hesp_hf.video_writer import write_video

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


PATCH_SIZE = 32  # --patch_size 16 measures ViT-B/16
TRAINED_CHECKPOINT: str | None = None  # --trained_checkpoint: a trained HESP folder for the bf16 agreement row
TRAINED_CLIPS: str | None = None


def bench_device() -> str:
    """The device taken from the environment: CUDA when PyTorch sees one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def vit_b32_models(quick: bool, poolings: tuple[str, ...] = ("mean", "attention")) -> dict[str, object]:
    """HESP models on one set of random ViT-B/32-size towers (quick: 4 layers), for each temporal pooling."""
    import tempfile

    import torch
    from transformers import CLIPConfig

    from hesp_hf import HESPConfig, HESPForOpenSetVideoClassification
    from hesp_hf.tiny_clip import save_char_tokenizer

    torch.manual_seed(0)
    layers = 4 if quick else 12
    clip_config = CLIPConfig(
        text_config={"num_hidden_layers": layers, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"num_hidden_layers": layers, "patch_size": PATCH_SIZE},
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


def benchmark_inference(quick: bool) -> tuple[list[dict], dict[str, float]]:
    import torch

    device = bench_device()
    native_bf16 = (
        device == "cuda"
        or "AMX" in torch.backends.cpu.get_cpu_capability()
        or "512" in torch.backends.cpu.get_cpu_capability()
    )
    models = {name: m.to(device) for name, m in vit_b32_models(quick).items()}
    model = models["mean"]
    batch, frames = (2, 8) if quick else (4, 8)
    if device == "cuda":
        batch = 64
    clips = torch.randn(batch, frames, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    repeats = 2 if quick else 3

    def bare(videos):
        return model.image_embeds(videos.flatten(0, 1)).view(batch, frames, -1).mean(dim=1)

    def timed(function, bf16: bool) -> float:
        def call():
            with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                function(clips)

        call()  # warm-up (and fills the text / reciprocal-point caches)
        # bf16 is emulated, and slow, on CPUs without bf16 instructions: fewer repeats there.
        return best_time(call, 1 if bf16 and not native_bf16 else repeats)

    rows, ratios = [], {}
    for bf16 in (False, True):
        precision = "bf16 autocast" if bf16 else "fp32"
        bare_time = timed(bare, bf16)
        rows.append(
            {
                "what": f"bare CLIP tower + mean pooling, {precision}: {batch / bare_time:.2f} clips/s",
                "seconds": bare_time,
                "ratio": None,
            }
        )
        variants = (("dataset", "mean"), ("dataset", "attention"), ("per_frame", "mean"))
        for location, pooling in variants if not bf16 or native_bf16 else variants[:1]:
            hesp = models[pooling]
            hesp.config.visual_prompt_location = location
            hesp_time = timed(lambda videos, hesp=hesp: hesp(videos), bf16)
            hesp.config.visual_prompt_location = "dataset"
            rows.append(
                {
                    "what": f"HESP {location}/{pooling}, {precision}: {batch / hesp_time:.2f} clips/s (ratio = HESP / bare speed)",
                    "seconds": hesp_time,
                    "ratio": bare_time / hesp_time,
                }
            )
            if (location, pooling) == ("dataset", "mean"):
                ratios[f"inference.hesp_over_bare_{'bf16' if bf16 else 'fp32'}"] = bare_time / hesp_time
                ratios[f"inference.seconds_{'bf16' if bf16 else 'fp32'}"] = hesp_time
    ratios["inference.bf16_over_fp32"] = ratios["inference.seconds_fp32"] / ratios["inference.seconds_bf16"]
    # Top-1 agreement of bf16 with fp32 on a sample of clips.
    sample = torch.randn(
        8 if quick or not native_bf16 else 32, frames, 3, 224, 224, generator=torch.Generator().manual_seed(1)
    ).to(device)
    known = model.config.num_known_labels
    with torch.inference_mode():
        fp32 = torch.cat([model(chunk).logits[:, :known] for chunk in sample.split(batch)])
        with torch.autocast(device, dtype=torch.bfloat16):
            bf16 = torch.cat([model(chunk).logits[:, :known].float() for chunk in sample.split(batch)])
    ratios["inference.bf16_top1_agreement"] = float((fp32.argmax(1) == bf16.argmax(1)).float().mean())
    rows.append(
        {
            "what": f"bf16 top-1 agreement with fp32 on {len(sample)} clips: {ratios['inference.bf16_top1_agreement']:.3f}; bf16 speed-up over fp32",
            "seconds": ratios["inference.seconds_bf16"],
            "ratio": ratios["inference.bf16_over_fp32"],
        }
    )
    if TRAINED_CHECKPOINT:
        agreement, count = trained_bf16_agreement(TRAINED_CHECKPOINT, TRAINED_CLIPS or demo_test_list(), device)
        ratios["inference.bf16_decision_agreement_trained"] = agreement
        rows.append(
            {
                "what": f"bf16 agreement with fp32 of the decisions (top label of K + 1, 'unknown' included) of "
                f"{TRAINED_CHECKPOINT} on {count} clips: {agreement:.3f}",
                "seconds": float("nan"),
                "ratio": None,
            }
        )
    return rows, ratios


def demo_test_list() -> str:
    """The test list `make demo` writes (its synthetic spec: the defaults, under outputs/synthetic)."""
    from hesp_hf.synthetic import SyntheticSpec

    return str(Path("outputs/synthetic") / f"synthetic-{SyntheticSpec().key()}" / "test.csv")


def trained_bf16_agreement(checkpoint: str, annotation: str, device: str) -> tuple[float, int]:
    """Share of the clips listed in `annotation` (a CSV with a `video_path` column, relative to its folder) on which
    a trained checkpoint decides the same under bfloat16 autocast as in float32: random towers give nearly tied
    logits, so only a trained model says whether bf16 changes answers."""
    import csv

    import torch

    from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
    from hesp_hf.data.decoding import sample_clip

    model = HESPForOpenSetVideoClassification.from_pretrained(checkpoint).to(device).eval()
    processor = HESPVideoProcessor.from_pretrained(checkpoint)
    with open(annotation, newline="") as handle:
        paths = [str(Path(annotation).parent / row["video_path"]) for row in csv.DictReader(handle)]
    decisions = {False: [], True: []}
    for start in range(0, len(paths), 32):
        videos = [sample_clip(path, model.config.num_frames).frames for path in paths[start : start + 32]]
        pixels = processor(videos, return_tensors="pt", do_sample_frames=False)["pixel_values_videos"].to(device)
        with torch.inference_mode():
            for bf16 in (False, True):
                with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    decisions[bf16].append(model(pixels).logits.float().argmax(-1))
    fp32, bf16 = torch.cat(decisions[False]), torch.cat(decisions[True])
    return float((fp32 == bf16).float().mean()), len(paths)


def benchmark_train(quick: bool) -> tuple[list[dict], dict[str, float]]:
    import torch

    device = bench_device()
    model = vit_b32_models(quick, ("mean",))["mean"].to(device).train()
    batch, frames = (2, 8) if quick else (8, 8)
    if device == "cuda" and not quick:
        batch = 64  # the paper's batch
    clips = torch.randn(batch, frames, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    labels = (torch.arange(batch) % model.config.num_known_labels).to(device)
    repeats = 1 if quick else 2

    def synchronized(function):
        def call():
            function()
            if device == "cuda":
                torch.cuda.synchronize()

        return call

    def step():
        model.zero_grad(set_to_none=True)
        model(clips, labels=labels).loss.backward()

    def frames_part():
        text = model.class_text_embeds().detach()
        prompted = model.add_visual_prompt(clips.flatten(0, 1), text)
        model.image_embeds(prompted).sum().backward()

    def negative_part():
        model.negative_visual_embeds().sum().backward()

    def text_part():
        model.class_text_embeds().sum().backward()

    def floor():
        with torch.no_grad():
            for _ in range(3):
                model.image_embeds(clips.flatten(0, 1))

    step()  # warm-up
    parts = (
        ("step", step),
        ("frames", frames_part),
        ("negative", negative_part),
        ("text", text_part),
        ("floor", floor),
    )
    times = {name: best_time(synchronized(function), repeats) for name, function in parts}
    target = times["floor"] + times["negative"]
    rows = [
        {
            "what": f"HESP training step, batch {batch} x {frames} frames: {batch / times['step']:.2f} clips/s",
            "seconds": times["step"],
            "ratio": None,
        },
        {
            "what": "  part: frame tower forward + backward to the pixel prompt",
            "seconds": times["frames"],
            "ratio": None,
        },
        {
            "what": f"  part: negative visual prompts ({model.config.num_known_labels} images) forward + backward",
            "seconds": times["negative"],
            "ratio": None,
        },
        {"what": "  part: prompted text tower forward + backward", "seconds": times["text"], "ratio": None},
        {
            "what": "floor: three bare forward passes of the frames (ratio = step / (floor + negative prompts))",
            "seconds": times["floor"],
            "ratio": times["step"] / target,
        },
    ]
    ratios = {"train.step_over_floor": times["step"] / target, "train.seconds_step": times["step"]}
    # --bf16 as the Trainer runs it: autocast, with the frozen towers stored in bfloat16 during training.
    from hesp_hf.training import FrozenTowersInBF16

    def autocast_step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(clips, labels=labels).loss
        model.zero_grad(set_to_none=True)
        loss.backward()

    native = device == "cuda" or "512" in torch.backends.cpu.get_cpu_capability()
    if native:
        import copy

        bf16_model = copy.deepcopy(model)
        FrozenTowersInBF16(bf16_model).cast()

        def bf16_step():
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = bf16_model(clips, labels=labels).loss
            bf16_model.zero_grad(set_to_none=True)
            loss.backward()

        bf16_step()  # warm-up
        # In rotation, so that the three see the same background load.
        fp32, autocast_only, bf16 = [], [], []
        for _ in range(repeats + 1):
            fp32.append(best_time(synchronized(step), 1))
            autocast_only.append(best_time(synchronized(autocast_step), 1))
            bf16.append(best_time(synchronized(bf16_step), 1))
        fp32_time, autocast_time, bf16_time = min(fp32), min(autocast_only), min(bf16)
        ratios.update({"train.bf16_step_speedup": fp32_time / bf16_time, "train.seconds_step_bf16": bf16_time})
        rows += [
            {
                "what": "  bf16 autocast alone (frozen weights re-cast at every call) (ratio = fp32 step / this)",
                "seconds": autocast_time,
                "ratio": fp32_time / autocast_time,
            },
            {
                "what": f"training step with --bf16 (autocast + frozen towers stored in bf16): {batch / bf16_time:.2f} "
                f"clips/s against fp32 {batch / fp32_time:.2f} in the same rotation (ratio = fp32 / bf16 step)",
                "seconds": bf16_time,
                "ratio": fp32_time / bf16_time,
            },
        ]
    else:
        rows.append({"what": "bf16 training step: skipped (no native bf16 on this CPU)", "seconds": None, "ratio": None})
    return rows, ratios


def benchmark_predict(quick: bool, workdir: Path) -> tuple[list[dict], dict[str, float]]:
    """The batch predictor against its two stages alone, each with the cores it may have inside the predictor: the
    decoding workers; the model's threads, the cores the workers leave or all of them when the model is the slower
    stage (the faster of the two is the baseline). Overlapped, it should run at the slower stage's speed."""
    import torch

    from hesp_hf import HESPVideoProcessor
    from hesp_hf.pairing import load_pair
    from hesp_hf.prediction import default_num_workers

    rows, ratios = [], {}
    setups = []
    demo = Path("outputs/demo")
    if (demo / "model.safetensors").exists() and Path(demo_test_list()).exists():
        import csv

        model, processor = load_pair(str(demo))
        with open(demo_test_list(), newline="") as handle:
            clips = [str(Path(demo_test_list()).parent / row["video_path"]) for row in csv.DictReader(handle)]
        setups.append(("demo", "the demo checkpoint, its test clips", model, processor, clips[: 48 if quick else None]))
    else:
        rows.append({"what": "demo checkpoint: skipped (run `make demo` first)", "seconds": None, "ratio": None})
    model = vit_b32_models(quick, ("mean",))["mean"]
    processor = HESPVideoProcessor(num_frames=8)
    source = workdir / "clip_keyint25.mp4"
    if not source.exists():
        from hesp_hf.video_writer import write_video

        seconds, (height, width) = (4, (360, 640)) if quick else (10, (720, 1280))
        write_video(source, synthetic_frames(seconds * 25, height, width), fps=25, options={"g": "25"})
    copies = workdir / "predict"
    copies.mkdir(exist_ok=True)
    clips = []
    count = 4 if quick else 128 if bench_device() == "cuda" else 32
    for index in range(count):  # hard links: separate files, as an archive has
        link = copies / f"clip{index:03d}.mp4"
        if not link.exists():
            os.link(source, link)
        clips.append(str(link))
    setups.append(("vit_b32", "ViT-B/32-size towers, 10 s 720p H.264 clips", model, processor, clips))

    on_gpu = bench_device() == "cuda"
    for key, description, model, processor, clips in setups:
        metrics = predictor_against_stages(
            model, processor, clips, default_num_workers(), batch_size=64 if on_gpu else 8, bf16=on_gpu
        )
        ratios.update({f"predict.{key}.{name}": value for name, value in metrics.items()})
        rows += [
            {
                "what": f"{description}: decoding alone, {metrics['workers']:.0f} worker(s): "
                f"{metrics['decode_clips_per_s']:.2f} clips/s",
                "seconds": metrics["decode_seconds"],
                "ratio": None,
            },
            {
                "what": f"{description}: model alone ({bench_device()}{', bf16' if on_gpu else ''}, "
                f"{metrics['threads']:.0f} CPU thread(s), the faster setting, batch {64 if on_gpu else 8}): "
                f"{metrics['model_clips_per_s']:.2f} clips/s",
                "seconds": metrics["model_seconds"],
                "ratio": None,
            },
            {
                "what": f"{description}: one clip at a time, decode then model ({torch.get_num_threads()} threads, "
                f"as the stock pipeline): {metrics['serial_clips_per_s']:.2f} clips/s",
                "seconds": metrics["serial_seconds"],
                "ratio": None,
            },
            {
                "what": f"{description}: predictor {metrics['predictor_clips_per_s']:.2f} clips/s (ratio = predictor / "
                f"min(decoding, model); {metrics['over_serial']:.2f}x the one-at-a-time speed; "
                f"{metrics['over_sequential_all_cores']:.2f}x the {metrics['sequential_all_cores_clips_per_s']:.2f} "
                "clips/s of the two stages one after the other, each alone on all cores)",
                "seconds": metrics["predictor_seconds"],
                "ratio": metrics["over_slower_stage"],
            },
        ]
    return rows, ratios


def predictor_against_stages(
    model, processor, clips: list[str], workers: int, batch_size: int, bf16: bool = False
) -> dict[str, float]:
    import tempfile

    import torch

    device = bench_device()
    model = model.to(device)

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    from hesp_hf.prediction import clip_loader, model_threads, predict_clips

    threads_before = torch.get_num_threads()
    threads = model_threads(workers)  # what the predictor gives the model
    model.eval()

    def decode_only():
        return [item for batch in clip_loader(clips, processor, batch_size, workers) for item in batch]

    for _ in clip_loader(clips[:2], processor, 1, workers):
        pass  # starts the workers' server process, which later runs (and the predictor) reuse
    start = time.perf_counter()
    items = decode_only()
    decode_seconds = time.perf_counter() - start
    cores = model_threads(0)
    start = time.perf_counter()
    for _ in clip_loader(clips, processor, batch_size, cores):
        pass
    decode_seconds_all_cores = time.perf_counter() - start
    batches = [
        torch.stack([i["pixel_values"] for i in items[s : s + batch_size]]).to(device)
        for s in range(0, len(items), batch_size)
    ]

    def model_only():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            for pixels in batches:
                model(pixel_values_videos=pixels)
        synchronize()

    model_only()  # warm-up (fills the prompt-feature caches)
    model_seconds_all_cores = best_time(model_only, 1)
    torch.set_num_threads(threads)
    try:
        model_seconds = min(best_time(model_only, 1), model_seconds_all_cores)
    finally:
        torch.set_num_threads(threads_before)

    def serial():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            for clip in clips:
                model(**processor(clip, return_tensors="pt").to(device))
        synchronize()

    serial_seconds = best_time(serial, 1)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        predict_clips(model, processor, clips, Path(folder) / "rows.jsonl", batch_size=batch_size,
                      num_workers=workers, bf16=bf16, progress=False)  # fmt: skip
        predictor_seconds = time.perf_counter() - start
    n = len(clips)
    slower = max(decode_seconds, model_seconds)
    # Where both stages share the CPU cores, overlap gains only where a stage does not scale to all of them: the
    # reference is the two stages one after the other, each alone on all cores.
    sequential = decode_seconds_all_cores + model_seconds_all_cores
    return {
        "workers": workers,
        "threads": threads if model_seconds < model_seconds_all_cores else threads_before,
        "decode_seconds": decode_seconds,
        "model_seconds": model_seconds,
        "serial_seconds": serial_seconds,
        "predictor_seconds": predictor_seconds,
        "decode_clips_per_s": n / decode_seconds,
        "model_clips_per_s": n / model_seconds,
        "serial_clips_per_s": n / serial_seconds,
        "predictor_clips_per_s": n / predictor_seconds,
        "over_slower_stage": slower / predictor_seconds,
        "over_sequential_all_cores": sequential / predictor_seconds,
        "sequential_all_cores_clips_per_s": n / sequential,
        "over_serial": serial_seconds / predictor_seconds,
    }


def benchmark_export(quick: bool, workdir: Path) -> tuple[list[dict], dict[str, float]]:
    """The inference-only checkpoint against the full one (parameters, file size, load time), and ONNX Runtime
    against eager PyTorch, fp32, on ViT-B/32-size random towers; the ONNX export's decisions on the demo's test
    clips when `make demo` has run."""
    import shutil

    import torch

    from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
    from hesp_hf.export import export_inference_only, export_onnx
    from hesp_hf.onnx_runtime import ONNXVideoClassifier

    model = vit_b32_models(quick, ("mean",))["mean"]
    with torch.no_grad():  # trained-looking prompt side: random init leaves many equal tensors
        generator = torch.Generator().manual_seed(0)
        for parameter in (model.prompt_learner.ctx, model.visual_prompt.delta, model.reciprocal_points.images):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    folder = workdir / "export"
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder / "full")
    HESPVideoProcessor(num_frames=8).save_pretrained(folder / "full")
    export_inference_only(str(folder / "full"), folder / "lean")

    def parameters(m):
        return sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers() if b.is_floating_point())

    def load(name):
        return HESPForOpenSetVideoClassification.from_pretrained(folder / name)

    full_load, lean_load = best_time(lambda: load("full"), 2), best_time(lambda: load("lean"), 2)
    full, lean = load("full").eval(), load("lean").eval()
    full_size, lean_size = (folder / "full" / "model.safetensors").stat().st_size, (
        folder / "lean" / "model.safetensors"
    ).stat().st_size
    pixels = torch.randn(2 if quick else 4, 8, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        same = float((full(pixels).logits - lean(pixels).logits).abs().max())
    fewer = 1 - parameters(lean) / parameters(full)
    ratios = {
        "export.lean_parameter_reduction": fewer,
        "export.lean_size_ratio": lean_size / full_size,
        "export.lean_load_speedup": full_load / lean_load,
        "export.lean_max_abs_logit_difference": same,
    }
    rows = [
        {
            "what": f"inference-only checkpoint: {parameters(lean) / 1e6:.1f}M parameters and constants against "
            f"{parameters(full) / 1e6:.1f}M ({100 * fewer:.1f} % fewer), {lean_size / 2**20:.0f} against "
            f"{full_size / 2**20:.0f} MiB, max abs logit difference {same:g} (ratio = full / lean load time)",
            "seconds": lean_load,
            "ratio": full_load / lean_load,
        }
    ]

    export_onnx(str(folder / "full"), folder / "onnx")
    threads = torch.get_num_threads()
    runtime = ONNXVideoClassifier(folder / "onnx", threads=threads)

    def eager():
        with torch.inference_mode():
            return lean(pixels).logits

    def onnx():
        return runtime(pixel_values_videos=pixels).logits

    eager(), onnx()  # warm-up
    eager_times, onnx_times = [], []
    for _ in range(2 if quick else 5):  # in rotation: both see the same background load
        eager_times.append(best_time(eager, 1))
        onnx_times.append(best_time(onnx, 1))
    eager_time, onnx_time = float(np.median(eager_times)), float(np.median(onnx_times))
    difference = float((eager() - onnx()).abs().max())
    ratios.update(
        {
            "export.onnx_speedup_over_eager_fp32": eager_time / onnx_time,
            "export.onnx_max_abs_logit_difference": difference,
        }
    )
    rows.append(
        {
            "what": f"ONNX Runtime fp32, batch {len(pixels)} x 8 frames, {threads} threads: {len(pixels) / onnx_time:.2f} "
            f"clips/s against eager fp32 {len(pixels) / eager_time:.2f} (medians of runs in rotation; max abs logit "
            f"difference {difference:.1e}) (ratio = eager / ONNX time)",
            "seconds": onnx_time,
            "ratio": eager_time / onnx_time,
        }
    )
    demo = Path("outputs/demo")
    if (demo / "model.safetensors").exists() and Path(demo_test_list()).exists():
        agreement, count, worst = onnx_decision_agreement(str(demo), folder / "demo-onnx")
        ratios["export.onnx_demo_decision_agreement"] = agreement
        rows.append(
            {
                "what": f"ONNX export of the demo checkpoint: same decisions (top label of K + 1) as eager on "
                f"{agreement * count:.0f} of its {count} test clips; max abs logit difference {worst:.1e}",
                "seconds": None,
                "ratio": None,
            }
        )
    shutil.rmtree(folder, ignore_errors=True)
    return rows, ratios


def onnx_decision_agreement(checkpoint: str, export_folder: Path) -> tuple[float, int, float]:
    import csv

    import torch

    from hesp_hf.data.decoding import sample_clip
    from hesp_hf.export import export_onnx
    from hesp_hf.onnx_runtime import ONNXVideoClassifier
    from hesp_hf.pairing import load_pair

    model, processor = load_pair(checkpoint)
    export_onnx(checkpoint, export_folder)
    runtime = ONNXVideoClassifier(export_folder)
    with open(demo_test_list(), newline="") as handle:
        paths = [str(Path(demo_test_list()).parent / row["video_path"]) for row in csv.DictReader(handle)]
    same, worst = 0, 0.0
    for start in range(0, len(paths), 32):
        videos = [sample_clip(path, model.config.num_frames).frames for path in paths[start : start + 32]]
        pixels = processor(videos, return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
        with torch.inference_mode():
            eager = model(pixels).logits
        onnx = runtime(pixel_values_videos=pixels).logits
        same += int((eager.argmax(-1) == onnx.argmax(-1)).sum())
        worst = max(worst, float((eager - onnx).abs().max()))
    return same / len(paths), len(paths), worst


def saved_activation_bytes(model, run: Callable[[], object]) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while `run()` runs a forward of `model`, without the
    model's own weights (linear layers keep a transposed view of theirs)."""
    import torch

    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    weights |= {buffer.untyped_storage().data_ptr() for buffer in model.buffers()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())


def peak_rss_added(run: Callable[[], object]) -> int:
    """Highest resident memory seen while `run()` runs (sampled every millisecond) minus the memory before it.

    `ru_maxrss` cannot be used: it is the process's all-time peak, which model construction may already have set."""
    import ctypes
    import threading

    import psutil

    process = psutil.Process()
    try:  # hand memory the allocator cached from earlier work back to the system, so it is not silently reused
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], process.memory_info().rss) - before


def memory_probe(checkpointing: bool, quick: bool) -> None:
    """Run one training step in this process; print the peak memory it added and the activations kept for backward."""
    import torch

    device = bench_device()
    model = vit_b32_models(quick, ("mean",))["mean"].to(device).train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    batch = 2 if quick else (64 if device == "cuda" else 8)
    labels = (torch.arange(batch) % model.config.num_known_labels).to(device)
    # A one-clip warm-up first: the first step also allocates thread pools and kernel caches, which are not activations.
    model(torch.randn(1, 8, 3, 224, 224, device=device), labels=labels[:1]).loss.backward()
    model.zero_grad(set_to_none=True)
    clips = torch.randn(batch, 8, 3, 224, 224, device=device)

    def step() -> None:
        model(clips, labels=labels).loss.backward()

    saved = saved_activation_bytes(model, lambda: model(clips, labels=labels))
    model.zero_grad(set_to_none=True)
    if device == "cuda":  # device memory: the allocator's own peak counter
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        added = torch.cuda.max_memory_allocated() - before
    else:
        added = peak_rss_added(step)
    print(json.dumps({"added_peak_mib": added / 2**20, "saved_activations_mib": saved / 2**20}))


def benchmark_memory(quick: bool) -> tuple[list[dict], dict[str, float]]:
    import subprocess
    import sys

    added, saved = {}, {}
    for checkpointing in (False, True):
        command = [
            sys.executable,
            __file__,
            "--memory_probe",
            str(int(checkpointing)),
            "--patch_size",
            str(PATCH_SIZE),
        ]
        command += ["--quick"] if quick else []
        # A fixed mmap threshold: glibc otherwise raises it as large blocks are freed and keeps later ones in its heap,
        # so resident memory would count freed temporaries as if they were still live.
        environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
        probe = json.loads(output.strip().splitlines()[-1])
        added[checkpointing], saved[checkpointing] = probe["added_peak_mib"], probe["saved_activations_mib"]
    ratio, saved_ratio = added[True] / added[False], saved[True] / saved[False]
    rows = [
        {
            "what": f"peak memory added by a training step: {added[False]:.0f} MiB without checkpointing "
            f"({saved[False]:.0f} MiB of activations kept for backward)",
            "seconds": float("nan"),
            "ratio": None,
        },
        {
            "what": f"with activation checkpointing: {added[True]:.0f} MiB ({saved[True]:.0f} MiB kept; "
            f"ratio = with / without: peak {ratio:.2f}, kept {saved_ratio:.2f})",
            "seconds": float("nan"),
            "ratio": ratio,
        },
    ]
    return rows, {
        "train.checkpointing_peak_memory_ratio": ratio,
        "train.checkpointing_saved_activations_ratio": saved_ratio,
    }


def machine() -> str:
    import torch

    accelerator = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} torch threads, {accelerator}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shrink every size so the script ends in about a minute")
    parser.add_argument("--json", type=Path, help="write the ratios (and times) to this JSON file")
    parser.add_argument(
        "--only", nargs="*", help="run only these sections (inference, train, memory, metric, decode, predict, export)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("outputs/benchmark"), help="where test clips are cached")
    parser.add_argument("--memory_probe", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    parser.add_argument("--patch_size", type=int, default=32, help="vision patch: 32 (ViT-B/32) or 16 (ViT-B/16)")
    parser.add_argument(
        "--trained_checkpoint", help="inference: also measure bf16 decision agreement of this trained HESP folder"
    )
    parser.add_argument(
        "--trained_clips",
        help="CSV (video_path column) of the clips for --trained_checkpoint (default: the demo's cached test list)",
    )
    args = parser.parse_args()
    global PATCH_SIZE, TRAINED_CHECKPOINT, TRAINED_CLIPS
    PATCH_SIZE, TRAINED_CHECKPOINT, TRAINED_CLIPS = args.patch_size, args.trained_checkpoint, args.trained_clips
    if args.memory_probe is not None:
        memory_probe(bool(args.memory_probe), args.quick)
        return

    sections: dict[str, Callable[[], tuple[list[dict], dict[str, float]]]] = {
        "inference": lambda: benchmark_inference(args.quick),
        "train": lambda: benchmark_train(args.quick),
        "memory": lambda: benchmark_memory(args.quick),
        "metric": lambda: benchmark_metric(args.quick),
        "decode": lambda: benchmark_decode(args.quick, args.workdir),
        "predict": lambda: benchmark_predict(args.quick, args.workdir),
        "export": lambda: benchmark_export(args.quick, args.workdir),
    }
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\n")
    print("| section | what | seconds (ours) | ratio (baseline / ours) |")
    print("| --- | --- | --- | --- |")
    ratios: dict[str, float] = {}
    for name, run in sections.items():
        if args.only and name not in args.only:
            continue
        rows, section_ratios = run()
        ratios.update(section_ratios)
        for row in rows:
            ratio = "" if row["ratio"] is None else f"{row['ratio']:.1f}x"
            seconds = "" if row["seconds"] is None else f"{row['seconds']:.4f}"
            print(f"| {name} | {row['what']} | {seconds} | {ratio} |", flush=True)
    if args.json:
        write_text_atomic(args.json, json.dumps({"machine": machine(), **ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
