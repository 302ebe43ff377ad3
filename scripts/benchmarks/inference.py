"""inference: clips/s of HESP (each visual-prompt location and temporal pooling) against the bare CLIP vision
tower with mean pooling, on random-weight towers of ViT-B/32 size, 8 frames per clip, float32 and bfloat16
autocast; bf16 agreement with fp32 (random towers, and a trained checkpoint with --trained_checkpoint)."""

from hesp_hf.inference.clips import list_clips

from .fixtures import demo_test_list, vit_b32_models
from .harness import Settings, bench_device, best_times_in_rotation


def benchmark_inference(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    import torch

    device = bench_device()
    native_bf16 = (
        device == "cuda"
        or "AMX" in torch.backends.cpu.get_cpu_capability()
        or "512" in torch.backends.cpu.get_cpu_capability()
    )
    quick = settings.quick
    models = {name: m.to(device) for name, m in vit_b32_models(quick, settings.patch_size).items()}
    model = models["mean"]
    batch, frames = (2, 8) if quick else (4, 8)
    if device == "cuda":
        batch = 64
    clips = torch.randn(batch, frames, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    repeats = 2 if quick else 3

    def bare(videos):
        return model.image_embeds(videos.flatten(0, 1)).view(batch, frames, -1).mean(dim=1)

    def in_mode(function, bf16: bool):
        def call():
            with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                function(clips)

        return call

    def at_location(hesp, location: str):
        def call(videos):
            hesp.config.visual_prompt_location = location
            try:
                hesp(videos)
            finally:
                hesp.config.visual_prompt_location = "dataset"

        return call

    rows, ratios = [], {}
    for bf16 in (False, True):
        precision = "bf16 autocast" if bf16 else "fp32"
        variants = (("dataset", "mean"), ("dataset", "attention"), ("per_frame", "mean"))
        if bf16 and not native_bf16:
            variants = variants[:1]  # bf16 is emulated, and slow, on CPUs without bf16 instructions
        calls = {"bare": in_mode(bare, bf16)}
        for location, pooling in variants:
            calls[f"{location}/{pooling}"] = in_mode(at_location(models[pooling], location), bf16)
        for call in calls.values():
            call()  # warm-up (and fills the text / reciprocal-point caches)
        # In rotation, so that the bare tower and every variant see the same background load.
        times = best_times_in_rotation(calls, 1 if bf16 and not native_bf16 else repeats)
        bare_time = times.pop("bare")
        rows.append(
            {
                "what": f"bare CLIP tower + mean pooling, {precision}: {batch / bare_time:.2f} clips/s",
                "seconds": bare_time,
                "ratio": None,
            }
        )
        for variant, hesp_time in times.items():
            rows.append(
                {
                    "what": f"HESP {variant}, {precision}: {batch / hesp_time:.2f} clips/s (ratio = HESP / bare speed, "
                    "in rotation)",
                    "seconds": hesp_time,
                    "ratio": bare_time / hesp_time,
                }
            )
            if variant == "dataset/mean":
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
    if settings.trained_checkpoint:
        agreement, count = trained_bf16_agreement(
            settings.trained_checkpoint, settings.trained_clips or demo_test_list(), device
        )
        ratios["inference.bf16_decision_agreement_trained"] = agreement
        rows.append(
            {
                "what": f"bf16 agreement with fp32 of the decisions (top label of K + 1, 'unknown' included) of "
                f"{settings.trained_checkpoint} on {count} clips: {agreement:.3f}",
                "seconds": float("nan"),
                "ratio": None,
            }
        )
    return rows, ratios


def trained_bf16_agreement(checkpoint: str, annotation: str, device: str) -> tuple[float, int]:
    """Share of the clips listed in `annotation` (a CSV with a `video_path` column, relative to its folder) on which
    a trained checkpoint decides the same under bfloat16 autocast as in float32: random towers give nearly tied
    logits, so only a trained model says whether bf16 changes answers."""

    import torch

    from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
    from hesp_hf.data.decoding import sample_clip

    model = HESPForOpenSetVideoClassification.from_pretrained(checkpoint).to(device).eval()
    processor = HESPVideoProcessor.from_pretrained(checkpoint)
    paths = list_clips(annotation)  # the CSV's video_path column, relative to it
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


run = benchmark_inference
