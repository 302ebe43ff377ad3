"""predict: the batch predictor against its stages alone (decoding, the model) and against one clip at a time,
on the demo checkpoint and on ViT-B/32-size towers with 720p clips."""

import time
from pathlib import Path

from hesp_hf.inference.clips import list_clips

from .fixtures import demo_test_list, linked_720p_clips, vit_b32_models
from .harness import Settings, bench_device, best_time


def benchmark_predict(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    """The batch predictor against its two stages alone, each with the cores it may have inside the predictor: the
    decoding workers; the model's threads, the cores the workers leave or all of them when the model is the slower
    stage (the faster of the two is the baseline). Overlapped, it should run at the slower stage's speed."""
    import torch

    from hesp_hf import HESPVideoProcessor
    from hesp_hf.inference.background import default_num_workers
    from hesp_hf.pairing import load_pair

    quick, workdir = settings.quick, settings.workdir

    rows, ratios = [], {}
    setups = []
    demo = Path("outputs/demo")
    if (demo / "model.safetensors").exists() and Path(demo_test_list()).exists():
        model, processor = load_pair(str(demo))
        clips = list_clips(demo_test_list())  # the CSV's video_path column, relative to it
        setups.append(
            ("demo", "the demo checkpoint, its test clips", model, processor, clips[: 48 if quick else None])
        )
    else:
        rows.append({"what": "demo checkpoint: skipped (run `make demo` first)", "seconds": None, "ratio": None})
    model = vit_b32_models(quick, settings.patch_size, ("mean",))["mean"]
    processor = HESPVideoProcessor(num_frames=8)
    count = 4 if quick else 128 if bench_device() == "cuda" else 32
    clips = linked_720p_clips(workdir, quick, count)
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

    from hesp_hf.inference.background import model_threads
    from hesp_hf.inference.clips import clip_loader
    from hesp_hf.inference.prediction import predict_clips

    threads_before = torch.get_num_threads()
    threads = model_threads(workers)  # what the predictor gives the model
    model.eval()

    def decode_only():
        return [item for batch in clip_loader(clips, processor, batch_size, workers) for item in batch]

    cores = model_threads(0)
    for count in {workers, cores} - {0}:
        for _ in clip_loader(clips[:2], processor, 1, count):
            pass  # starts the workers' server process, which later runs (and the predictor) reuse
    start = time.perf_counter()
    items = decode_only()
    decode_seconds = time.perf_counter() - start
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


run = benchmark_predict
