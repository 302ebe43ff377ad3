"""export: the inference-only checkpoint against the full one, ONNX Runtime against eager fp32, and the ONNX
export's decisions on the demo's test clips."""

from pathlib import Path

import numpy as np

from hesp_hf.inference.clips import list_clips

from .fixtures import demo_test_list, vit_b32_models
from .harness import Settings, best_time


def benchmark_export(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    """The inference-only checkpoint against the full one (parameters, file size, load time), and ONNX Runtime
    against eager PyTorch, fp32, on ViT-B/32-size random towers; the ONNX export's decisions on the demo's test
    clips when `make demo` has run."""
    import shutil

    import torch

    from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
    from hesp_hf.inference.export import export_inference_only, export_onnx
    from hesp_hf.inference.onnx_runtime import ONNXVideoClassifier

    quick, workdir = settings.quick, settings.workdir
    model = vit_b32_models(quick, settings.patch_size, ("mean",))["mean"]
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
    full_size, lean_size = (
        (folder / "full" / "model.safetensors").stat().st_size,
        (folder / "lean" / "model.safetensors").stat().st_size,
    )
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

    import torch

    from hesp_hf.data.decoding import sample_clip
    from hesp_hf.inference.export import export_onnx
    from hesp_hf.inference.onnx_runtime import ONNXVideoClassifier
    from hesp_hf.pairing import load_pair

    model, processor = load_pair(checkpoint)
    export_onnx(checkpoint, export_folder)
    runtime = ONNXVideoClassifier(export_folder)
    paths = list_clips(demo_test_list())  # the CSV's video_path column, relative to it
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


run = benchmark_export
