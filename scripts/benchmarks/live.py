"""live: `hesp-timeline --live` on a 720p H.264 stream (MPEG-TS, 25 frames a second, a keyframe a second, B-frames
as camera encoders write them) fed through a pipe at the pace it plays, window 2 s of 8 frames, stride 0.5 s: the
latency from the arrival of each window's last sampled frame to its decision (median, 95th percentile, against the
target of the stride + 0.5 s) and the share of sampled frames dropped because the model fell behind, for the demo
checkpoint and ViT-B/32-size random towers in fp32 and as the int8 ONNX export (`hesp-export --int8`, as the deploy
section builds it). Each model gets the same stream in turn; the pipe's reader, decoding and the model share the
machine's cores as they would live."""

import os
import threading
from pathlib import Path

from .fixtures import vit_b32_models
from .harness import Settings
from .timeline import repeated_video


WINDOW_S, STRIDE_S = 2.0, 0.5
TARGET_S = STRIDE_S + 0.5


def as_mpegts(source: Path, path: Path) -> Path:
    """The packets of `source` muxed again into MPEG-TS, the container a live pipe carries."""
    import av

    from hesp_hf.atomic_files import atomic_output

    if path.exists():
        return path
    with av.open(str(source)) as reader, atomic_output(path) as temporary:
        template = reader.streams.video[0]
        with av.open(str(temporary), "w", format="mpegts") as writer:
            stream = writer.add_stream_from_template(template)
            for packet in reader.demux(template):
                if packet.size:
                    packet.stream = stream
                    writer.mux(packet)
    return path


def live_run(model, processor, stream: Path) -> dict:
    """Feed `stream` at its pace through a pipe into the live timeline; its summary's live figures."""
    from hesp_hf.embedded.paced_stream import feed
    from hesp_hf.inference.live import LiveTimeline

    read_fd, write_fd = os.pipe()

    def write() -> None:
        try:
            feed(stream, write_fd)
        finally:
            os.close(write_fd)

    feeder = threading.Thread(target=write, daemon=True)
    feeder.start()
    live = LiveTimeline(model, processor, read_fd, WINDOW_S, STRIDE_S)
    windows = list(live)
    feeder.join()
    os.close(read_fd)
    return {**live.record(windows).summary()["live"], "windows": len(windows)}


def run(settings: Settings) -> tuple[list[dict], dict[str, float]]:
    from hesp_hf import HESPVideoProcessor
    from hesp_hf.inference.deployment import load_for_prediction
    from hesp_hf.inference.live import model_threads
    from hesp_hf.inference.quantization import export_int8
    from hesp_hf.pairing import load_pair

    quick, workdir = settings.quick, settings.workdir
    seconds = 12 if quick else 60
    height, width = (360, 640) if quick else (720, 1280)
    recording = repeated_video(workdir / f"timeline-{height}p-{seconds}s.mp4", seconds, 25, height, width)
    stream = as_mpegts(recording, workdir / f"live-{height}p-{seconds}s.ts")

    folder = workdir / ("live-vit-b32-4-layers" if quick else "live-vit-b32")  # quick: 4 layers
    if not (folder / "int8" / "config.json").exists():
        model = vit_b32_models(quick, settings.patch_size, ("mean",))["mean"]
        model.save_pretrained(folder / "full")
        HESPVideoProcessor(num_frames=8).save_pretrained(folder / "full")
        export_int8(str(folder / "full"), folder / "int8")
    setups = [
        ("vit_b32_fp32", "ViT-B/32-size towers, fp32", *load_for_prediction(str(folder / "full"))),
        (  # as hesp-timeline --live loads an export: its threads off the core that decodes
            "vit_b32_int8",
            "ViT-B/32-size towers, int8 ONNX",
            *load_for_prediction(str(folder / "int8"), threads=model_threads(), spinning=False),
        ),
    ]
    rows, ratios = [], {}
    demo = Path("outputs/demo")
    if (demo / "model.safetensors").exists():
        model, processor = load_pair(str(demo))
        setups.insert(0, ("demo", "the demo checkpoint", model.eval(), processor))
    else:
        rows.append({"what": "demo checkpoint: skipped (run `make demo` first)", "seconds": None, "ratio": None})
    for key, description, model, processor in setups:
        figures = live_run(model, processor, stream)
        latency = figures["latency_s"]
        ratios.update(
            {
                f"live.{key}.latency_median_s": latency["median"],
                f"live.{key}.latency_p95_s": latency["p95"],
                f"live.{key}.latency_p95_over_target": latency["p95"] / TARGET_S,
                f"live.{key}.drop_rate": figures["drop_rate"],
            }
        )
        rows.append(
            {
                "what": f"{description}, {height}p {seconds} s at real-time pace, stride {STRIDE_S} s: latency "
                f"median {latency['median']:.3f} s, p95 {latency['p95']:.3f} s (target <= {TARGET_S:g} s; ratio = "
                f"p95 / target), max {latency['max']:.3f} s; {figures['dropped_frames']} of "
                f"{figures['sampled_frames']} sampled frames dropped ({100 * figures['drop_rate']:.1f} %), "
                f"{figures['windows']} windows (model threads {model_threads()}, decoding beside it)",
                "seconds": latency["p95"],
                "ratio": latency["p95"] / TARGET_S,
            }
        )
    return rows, ratios
