"""live: `hesp-timeline --live` on a 720p H.264 stream (MPEG-TS, 25 frames a second, a keyframe a second, B-frames
as camera encoders write them) fed through a pipe at the pace it plays, window 2 s of 8 frames, stride 0.5 s: the
latency from the arrival of each window's last sampled frame to its decision (median, 95th percentile, against the
target of the stride + 0.5 s) and the share of sampled frames dropped because the model fell behind, for the demo
checkpoint and ViT-B/32-size random towers in fp32 and as the int8 ONNX export (`hesp-export --int8`, as the deploy
section builds it). Each model gets the same stream in turn; the pipe's reader, decoding and the model share the
machine's cores as they would live. Then back-pressure (a stream fed faster than the model can follow: the share of
frames dropped, the latency that stays bounded) and the memory of a long stream."""

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


def live_run(model, processor, stream: Path, folder: Path, speed: float = 1.0) -> dict:
    """Feed `stream` through a pipe at `speed` times its pace into `hesp-timeline --live`'s path (rows appended to
    `folder/windows.jsonl`, the files at the end); its summary's live figures, with the resident memory at the first
    window and the most seen at any later one (sampled every 20 windows)."""
    import psutil

    from hesp_hf.embedded.paced_stream import Pacing, feed
    from hesp_hf.inference.live import LiveTimeline, record_live

    read_fd, write_fd = os.pipe()

    def write() -> None:
        try:
            feed(stream, write_fd, Pacing(speed=speed))
        except BrokenPipeError:
            pass
        finally:
            os.close(write_fd)

    feeder = threading.Thread(target=write, daemon=True)
    feeder.start()
    live = LiveTimeline(model, processor, read_fd, WINDOW_S, STRIDE_S)
    process, memory, count = psutil.Process(), {}, [0]

    def sample(_window) -> None:
        count[0] += 1
        if count[0] == 1 or count[0] % 20 == 0:
            rss = process.memory_info().rss / 2**20
            memory.setdefault("first_mib", rss)
            memory["most_mib"] = max(memory.get("most_mib", 0.0), rss)

    summary = record_live(live, folder, "live", on_window=sample)
    feeder.join()
    os.close(read_fd)
    return {**summary["live"], "windows": summary["windows"], **memory}


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
        figures = live_run(model, processor, stream, workdir / "live-runs" / key)
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
    rows += overload_and_memory(settings, setups, ratios)
    return rows, ratios


def overload_and_memory(settings: Settings, setups: list, ratios: dict[str, float]) -> list[dict]:
    """Back-pressure: ViT-B/32 fp32 fed 4 times faster than real time (more frames than it can encode: frames are
    dropped, latency stays bounded). Memory: the smallest model through a long stream fed 12 times faster than real
    time (the resident memory at the first window and the most at any later one)."""
    quick, workdir = settings.quick, settings.workdir
    rows = []
    seconds = 12 if quick else 60
    small = repeated_video(workdir / f"timeline-360p-{seconds}s.mp4", seconds, 25, 360, 640)
    small = as_mpegts(small, workdir / f"live-360p-{seconds}s.ts")
    _, description, model, processor = next(s for s in setups if s[0] == "vit_b32_fp32")
    figures = live_run(model, processor, small, workdir / "live-runs" / "overload", speed=4.0)
    latency = figures["latency_s"]
    ratios.update({"live.overload.drop_rate": figures["drop_rate"], "live.overload.latency_p95_s": latency["p95"]})
    decided = figures["windows"] - figures["dropped_windows"]
    rows.append(
        {
            "what": f"{description}, 360p {seconds} s at 4x real-time pace (overloaded): "
            f"{100 * figures['drop_rate']:.1f} % of sampled frames dropped, {decided} of {figures['windows']} "
            f"windows decided, latency median {latency['median']:.3f} s, p95 {latency['p95']:.3f} s, max "
            f"{latency['max']:.3f} s",
            "seconds": latency["p95"],
            "ratio": None,
        }
    )
    long_seconds = 120 if quick else 1200
    long = repeated_video(workdir / f"live-360p-{long_seconds}s.mp4", long_seconds, 25, 360, 640)
    long = as_mpegts(long, workdir / f"live-360p-{long_seconds}s.ts")
    key, description, model, processor = setups[0]
    figures = live_run(model, processor, long, workdir / "live-runs" / "long", speed=12.0)
    added = figures["most_mib"] - figures["first_mib"]
    ratios[f"live.long_stream.{key}.rss_added_mib"] = added
    rows.append(
        {
            "what": f"{description}, 360p {long_seconds} s at 12x real-time pace: resident memory "
            f"{figures['first_mib']:.0f} MiB at the first window, at most {figures['most_mib']:.0f} MiB later "
            f"(+{added:.0f} MiB over {figures['windows']} windows); {figures['dropped_frames']} frames dropped",
            "seconds": None,
            "ratio": None,
        }
    )
    return rows
