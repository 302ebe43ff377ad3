"""train: one HESP training step split into its parts, against three bare forward passes of the frames; the step
with `--bf16` (autocast, frozen towers stored in bfloat16) against fp32, in rotation."""

from .fixtures import vit_b32_models
from .harness import Settings, bench_device, best_times_in_rotation


def benchmark_train(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    import torch

    device = bench_device()
    quick = settings.quick
    model = vit_b32_models(quick, settings.patch_size, ("mean",))["mean"].to(device).train()
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
    times = best_times_in_rotation({name: synchronized(function) for name, function in parts}, repeats)
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
        times = best_times_in_rotation(
            {
                "fp32": synchronized(step),
                "autocast": synchronized(autocast_step),
                "bf16": synchronized(bf16_step),
            },
            repeats + 1,
        )
        fp32_time, autocast_time, bf16_time = times["fp32"], times["autocast"], times["bf16"]
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
        rows.append(
            {"what": "bf16 training step: skipped (no native bf16 on this CPU)", "seconds": None, "ratio": None}
        )
    return rows, ratios


run = benchmark_train
