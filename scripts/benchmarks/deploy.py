"""deploy: every deployment path of a trained checkpoint on the CPU, and the batch predictor against its ceiling.

1. Paths (eager fp32, lean fp32, bf16 tower, bf16 tower + torch.compile, bf16 autocast, ONNX fp32, ONNX int8, and
   torch's own dynamic int8 for the int8 choice): clips/s on ViT-B/32-size random towers (batch 8 clips x 8 frames,
   every core, medians of runs in rotation), the peak resident memory of a fresh process that loads the form and
   predicts one batch, the size of its weights on disk, and agreement with eager fp32: max abs logit difference on
   the random towers, and on the trained demo checkpoint's test clips (after `make demo`) the share of equal
   decisions (top label of K + 1) and the AUROC.
2. The predictor against its ceiling: decoding and the model share the cores, so at best it finishes
   cores / (decode core-seconds + model core-seconds) clips per second (decoding on one core, the model on all of
   them, each measured alone); the predictor's clips/s over that ceiling, for fp32, bf16 and int8, on the demo
   checkpoint's test clips and on 10 s 720p H.264 clips with ViT-B/32-size towers.

The machine line names the CPU's matrix instructions, and oneDNN's own report of the kernels a bf16 and an int8
Linear ran on (`ONEDNN_VERBOSE`), since int8 and bf16 speed depend on them: where the CPU lacks AMX the ratios are
reported, not targeted.
"""

import copy
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hesp_hf.inference.clips import list_clips

from .fixtures import demo_test_list, linked_720p_clips, vit_b32_models
from .harness import Settings, best_time


DEMO = Path("outputs/demo")
WEIGHT_FILES = ("model.safetensors", "model.onnx", "model.onnx.data")


def benchmark_deploy(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    import shutil

    import torch

    from hesp_hf import HESPVideoProcessor
    from hesp_hf.inference.export import export_inference_only, export_onnx
    from hesp_hf.inference.quantization import export_int8

    quick, workdir = settings.quick, settings.workdir
    folder = workdir / "deploy"
    shutil.rmtree(folder, ignore_errors=True)
    model = vit_b32_models(quick, settings.patch_size, ("mean",))["mean"]
    with torch.no_grad():  # trained-looking prompt side: random init leaves many equal tensors
        generator = torch.Generator().manual_seed(0)
        for parameter in (model.prompt_learner.ctx, model.visual_prompt.delta, model.reciprocal_points.images):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    model.save_pretrained(folder / "full")
    HESPVideoProcessor(num_frames=8).save_pretrained(folder / "full")
    export_inference_only(str(folder / "full"), folder / "lean")
    export_onnx(str(folder / "full"), folder / "onnx")
    export_int8(str(folder / "full"), folder / "int8")

    rows, ratios = [{"what": f"oneDNN kernels: {onednn_kernels()}", "seconds": None, "ratio": None}], {}
    table = path_speeds(folder, quick)
    memory = {name: peak_memory_mib(folder, name) for name in table}
    demo = demo_agreement(workdir / "deploy-demo") if _has_demo() else {}
    fp32_speed = table["eager fp32"]["clips_per_s"]
    lines = [
        "| path | clips/s (x eager fp32) | peak memory, MiB | weights on disk, MiB | max abs logit difference "
        "(random towers) | demo: decisions as fp32 | demo AUROC |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, measured in table.items():
        size = _weights_mib(folder / measured["folder"])
        agreement = demo.get(name, {})
        key = name.replace(" ", "_").replace("+", "").replace("__", "_")
        ratios.update(
            {
                f"deploy.{key}.clips_per_s": measured["clips_per_s"],
                f"deploy.{key}.over_eager_fp32": measured["clips_per_s"] / fp32_speed,
                f"deploy.{key}.peak_memory_mib": memory[name],
                f"deploy.{key}.weights_mib": size,
                f"deploy.{key}.max_abs_logit_difference": measured["difference"],
                **{f"deploy.{key}.demo_{k}": v for k, v in agreement.items()},
            }
        )
        same = f"{agreement['decision_agreement']:.3f} of {agreement['clips']:.0f}" if agreement else "-"
        auroc = f"{agreement['auroc']:.4f}" if agreement else ""
        lines.append(
            f"| {name} | {measured['clips_per_s']:.2f} ({measured['clips_per_s'] / fp32_speed:.2f}x) | "
            f"{memory[name]:.0f} | {size:.0f} | {measured['difference']:.1e} | {same} | {auroc} |"
        )
        rows.append(
            {
                "what": f"{name}: {measured['clips_per_s']:.2f} clips/s, peak {memory[name]:.0f} MiB, weights "
                f"{size:.0f} MiB; demo decisions as fp32 {same}, AUROC {auroc or '-'} (ratio = over eager fp32)",
                "seconds": 8 / measured["clips_per_s"],
                "ratio": measured["clips_per_s"] / fp32_speed,
            }
        )
    print("\n".join(["", "Deployment paths:", "", *lines, ""]), flush=True)

    ceiling_rows, ceiling_ratios = predictor_ceilings(settings, folder)
    rows += ceiling_rows
    ratios.update(ceiling_ratios)
    shutil.rmtree(folder, ignore_errors=True)
    return rows, ratios


# ------------------------------------------------------------------------------------------------------ paths
def _forms(folder: Path, threads: int) -> dict[str, tuple[str, object, bool]]:
    """Name -> (export folder, model, autocast) of every path, loaded as `hesp-predict` loads them."""
    import torch

    from hesp_hf.inference.deployment import compile_tower, load_for_prediction

    full, _ = load_for_prediction(str(folder / "full"))
    lean, _ = load_for_prediction(str(folder / "lean"))
    bf16, _ = load_for_prediction(str(folder / "full"), precision="bf16")
    compiled = compile_tower(copy.deepcopy(bf16))
    onnx, _ = load_for_prediction(str(folder / "onnx"), threads=threads)
    int8, _ = load_for_prediction(str(folder / "int8"), threads=threads)
    torch_int8 = copy.deepcopy(lean)
    torch.backends.quantized.engine = "onednn"  # int8 matmuls on VNNI / AMX (the default x86 engine is slower)
    torch_int8.vision_model = torch.ao.quantization.quantize_dynamic(
        torch_int8.vision_model, {torch.nn.Linear}, dtype=torch.qint8
    )
    return {
        "eager fp32": ("full", full, False),
        "lean fp32": ("lean", lean, False),
        "bf16 tower": ("full", bf16, False),
        "bf16 tower + compile": ("full", compiled, False),
        "bf16 autocast": ("full", copy.deepcopy(full), True),  # its own text-feature cache (kept per precision)
        "ONNX fp32": ("onnx", onnx, False),
        "ONNX int8": ("int8", int8, False),
        "torch dynamic int8 (onednn)": ("lean", torch_int8, False),
    }


def path_speeds(folder: Path, quick: bool) -> dict[str, dict]:
    import torch

    threads = torch.get_num_threads()
    forms = _forms(folder, threads)
    pixels = torch.randn(8, 8, 3, 224, 224, generator=torch.Generator().manual_seed(1))

    def call(model, autocast):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return model(pixel_values_videos=pixels).logits.float()

        return run

    calls = {name: call(model, autocast) for name, (_, model, autocast) in forms.items()}
    outputs = {name: run() for name, run in calls.items()}  # warm-up; compiles
    outputs = {name: run() for name, run in calls.items()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(2 if quick else 4):  # in rotation: every path sees the same background load
        for name, run in calls.items():
            times[name].append(best_time(run, 1))
    reference = outputs["eager fp32"]
    return {
        name: {
            "folder": forms[name][0],
            "clips_per_s": len(pixels) / float(np.median(times[name])),
            "difference": float((outputs[name] - reference).abs().max()),
        }
        for name in calls
    }


_PROBE = """
import sys, torch
from hesp_hf.inference.deployment import load_for_prediction
name, folder = sys.argv[1], sys.argv[2]
if name == "torch dynamic int8 (onednn)":
    model, _ = load_for_prediction(folder)
    torch.backends.quantized.engine = "onednn"
    model.vision_model = torch.ao.quantization.quantize_dynamic(model.vision_model, {torch.nn.Linear}, dtype=torch.qint8)
else:
    model, _ = load_for_prediction(folder, precision="bf16" if name.startswith("bf16 tower") else "fp32")
if name.endswith("compile"):
    model.vision_model.compile()
pixels = torch.randn(8, 8, 3, 224, 224)
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16 autocast"):
    model(pixel_values_videos=pixels)
# VmHWM, not ru_maxrss: the latter keeps the launching process's peak across exec.
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""


def peak_memory_mib(folder: Path, name: str) -> float:
    """Peak resident memory (MiB) of a fresh process that loads the path as `hesp-predict` does and predicts one
    batch of 8 clips x 8 frames (imports included: torch and transformers come with every path)."""
    form = {"lean fp32": "lean", "ONNX fp32": "onnx", "ONNX int8": "int8", "torch dynamic int8 (onednn)": "lean"}
    target = folder / form.get(name, "full")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, name, str(target)], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    return float(result.stdout.strip().splitlines()[-1])


def _weights_mib(folder: Path) -> float:
    return sum((folder / name).stat().st_size for name in WEIGHT_FILES if (folder / name).exists()) / 2**20


def onednn_kernels() -> str:
    """oneDNN's report (ONEDNN_VERBOSE) of the ISA it detected and the kernels a bf16 Linear and a torch dynamic int8
    Linear ran on, from a fresh process."""
    code = (
        "import torch\n"
        "x = torch.randn(64, 768)\n"
        "linear = torch.nn.Linear(768, 768)\n"
        "torch.backends.quantized.engine = 'onednn'\n"
        "q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)\n"
        "with torch.inference_mode():\n"
        "    linear.to(torch.bfloat16)(x.bfloat16()); q(x)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "ONEDNN_VERBOSE": "1"}
    )
    isa = next((line.split("isa:")[1] for line in result.stdout.splitlines() if "isa:" in line), "not reported")
    kernels = sorted(
        {
            f"{fields[6]} ({fields[8].split()[0].split(':')[1]})"
            for line in result.stdout.splitlines()
            if line.startswith("onednn_verbose") and ",exec,cpu,matmul," in line
            for fields in [line.split(",")]
            if len(fields) > 8
        }
    )
    return f"ISA {isa}; matmul kernels run: {', '.join(kernels) or 'none reported (oneDNN not used)'}"


# ------------------------------------------------------------------------------------------------------ demo
def _has_demo() -> bool:
    return (DEMO / "model.safetensors").exists() and Path(demo_test_list()).exists()


def demo_agreement(folder: Path) -> dict[str, dict[str, float]]:
    """Decisions (top label of K + 1) of every path on the demo's test clips, against eager fp32, and each path's
    AUROC (known test clips against unknown ones)."""
    import shutil

    import torch

    from hesp_hf.data.decoding import sample_clip
    from hesp_hf.inference.deployment import load_for_prediction
    from hesp_hf.inference.export import export_inference_only, export_onnx
    from hesp_hf.inference.quantization import export_int8
    from hesp_hf.metrics.oscr.oscr import open_set_metrics

    shutil.rmtree(folder, ignore_errors=True)
    export_inference_only(str(DEMO), folder / "lean")
    export_onnx(str(DEMO), folder / "onnx")
    export_int8(str(DEMO), folder / "int8")
    full, processor = load_for_prediction(str(DEMO))
    forms = {
        "eager fp32": (full, False),
        "lean fp32": (load_for_prediction(str(folder / "lean"))[0], False),
        "bf16 tower": (load_for_prediction(str(DEMO), precision="bf16")[0], False),
        "bf16 autocast": (full, True),
        "ONNX fp32": (load_for_prediction(str(folder / "onnx"))[0], False),
        "ONNX int8": (load_for_prediction(str(folder / "int8"))[0], False),
    }
    known = list(full.config.known_labels)
    with open(demo_test_list(), newline="") as handle:
        references = np.array([known.index(r["label"]) if r["label"] in known else -1 for r in csv.DictReader(handle)])
    paths = list_clips(demo_test_list())
    logits: dict[str, list] = {name: [] for name in forms}
    for start in range(0, len(paths), 32):
        videos = [sample_clip(path, full.config.num_frames).frames for path in paths[start : start + 32]]
        pixels = processor(videos, return_tensors="pt", do_sample_frames=False)["pixel_values_videos"]
        for name, (model, autocast) in forms.items():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits[name].append(model(pixel_values_videos=pixels).logits.float())
    merged = {name: torch.cat(values) for name, values in logits.items()}
    reference = merged["eager fp32"].argmax(-1)
    results = {}
    for name, values in merged.items():
        metrics = open_set_metrics(values.numpy(), references, has_unknown_column=True)
        results[name] = {
            "decision_agreement": float((values.argmax(-1) == reference).float().mean()),
            "clips": float(len(paths)),
            "auroc": float(metrics["auroc"]),
        }
    results["bf16 tower + compile"] = results["bf16 tower"]  # the same weights and arithmetic
    shutil.rmtree(folder, ignore_errors=True)
    return results


# ------------------------------------------------------------------------------------------------------ ceiling
def predictor_ceilings(settings: Settings, folder: Path) -> tuple[list[dict], dict[str, float]]:
    """Each setup x precision: decoding core-seconds and model core-seconds per clip, the ceiling they allow, and
    the predictor's clips/s against it."""
    from hesp_hf import HESPVideoProcessor
    from hesp_hf.inference.background import default_num_workers

    quick, workdir = settings.quick, settings.workdir
    setups = []
    if _has_demo():
        clips = list_clips(demo_test_list())[: 48 if quick else None]
        setups.append(("demo", "demo checkpoint, its test clips", str(DEMO), None, clips))
    clips = linked_720p_clips(workdir, quick, 8 if quick else 48)
    setups.append(("vit_b32", "ViT-B/32-size towers, 10 s 720p H.264 clips", str(folder / "full"), folder, clips))

    rows, ratios = [], {}
    workers = default_num_workers()
    for key, description, checkpoint, exports, clips in setups:
        processor = HESPVideoProcessor.from_pretrained(checkpoint)
        decode = _decode_core_seconds(clips, processor)
        int8_folder = exports / "int8" if exports else None
        if int8_folder is None:
            from hesp_hf.inference.quantization import export_int8

            int8_folder = export_int8(checkpoint, workdir / "deploy-demo-int8")
        for precision in ("fp32", "bf16", "int8"):
            measured = _against_ceiling(checkpoint, int8_folder, precision, processor, clips, decode, workers)
            prefix = f"deploy.predict.{key}.{precision}"
            ratios.update({f"{prefix}.{name}": value for name, value in measured.items()})
            rows.append(
                {
                    "what": f"predictor, {description}, {precision}: {measured['clips_per_s']:.2f} clips/s; ceiling "
                    f"{measured['ceiling_clips_per_s']:.2f} = {measured['cores']:.0f} cores / (decode "
                    f"{measured['decode_core_s']:.3f} + model {measured['model_core_s']:.3f} core-s per clip) "
                    "(ratio = predictor / ceiling)",
                    "seconds": len(clips) / measured["clips_per_s"],
                    "ratio": measured["over_ceiling"],
                }
            )
        if exports is None:
            import shutil

            shutil.rmtree(int8_folder, ignore_errors=True)
    return rows, ratios


def _decode_core_seconds(clips: list[str], processor) -> float:
    """Core-seconds per clip to decode and preprocess, on one core (in this process, no worker)."""
    import torch

    from hesp_hf.inference.clips import clip_loader

    def decode():
        for _ in clip_loader(clips, processor, 8, 0):
            pass

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return best_time(decode, 2) / len(clips)
    finally:
        torch.set_num_threads(before)


def _against_ceiling(checkpoint, int8_folder, precision, processor, clips, decode_core_s, workers) -> dict:
    import torch

    from hesp_hf.inference.background import cores_per_process
    from hesp_hf.inference.clips import clip_loader
    from hesp_hf.inference.deployment import load_for_prediction
    from hesp_hf.inference.prediction import predict_clips

    cores = cores_per_process(1)
    if precision == "int8":  # as hesp-predict loads it
        model, _ = load_for_prediction(str(int8_folder), threads=cores, spinning=False)
    else:
        model, _ = load_for_prediction(checkpoint, precision=precision)
    items = [item for batch in clip_loader(clips, processor, 8, 0) for item in batch]
    batches = [torch.stack([i["pixel_values"] for i in items[s : s + 8]]) for s in range(0, len(items), 8)]

    def model_only():
        with torch.inference_mode():
            for pixels in batches:
                model(pixel_values_videos=pixels)

    model_only()  # warm-up (caches, first-call set-up)
    model_core_s = best_time(model_only, 3) * cores / len(clips)  # on every core
    ceiling = cores / (decode_core_s + model_core_s)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        predict_clips(model, processor, clips, Path(scratch) / "rows.jsonl", batch_size=8, num_workers=workers,
                      progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
    achieved = len(clips) / seconds
    return {
        "cores": float(cores),
        "decode_core_s": decode_core_s,
        "model_core_s": model_core_s,
        "ceiling_clips_per_s": ceiling,
        "clips_per_s": achieved,
        "over_ceiling": achieved / ceiling,
    }


run = benchmark_deploy
