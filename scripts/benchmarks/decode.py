"""decode: clips/s to sample 8 frames (segment centres) from a 10-second 720p H.264 clip with
`hesp_hf.data.sample_clip` against `transformers.video_utils.load_video(..., backend="pyav")` with the same indices,
for a clip with a keyframe every second and one with x264's default keyframe interval; from a folder of 250 JPEG
frames against opening every frame; the resident memory added by sampling a 700 MB H.264 file (120 MB with --quick)
against holding its packets; face detection + cropping against decoding the same frames."""

from pathlib import Path

import numpy as np

from .fixtures import every_packet, synthetic_frames, write_large_video
from .harness import Settings, best_time, peak_rss_added


def benchmark_decode(quick: bool, workdir: Path) -> tuple[list[dict], dict[str, float]]:
    from PIL import Image
    from transformers.video_utils import load_video

    from hesp_hf.data import sample_clip
    from hesp_hf.data.annotations import frame_files
    from hesp_hf.embedded.video_writer import write_video
    from hesp_hf.modeling.video_decoding_hesp import segment_indices

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
            f"streamed, against {held:.0f} MB holding every packet (a reader that keeps the whole demuxed stream)",
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
    from hesp_hf.embedded.synthetic import render_clip

    frames = sample_clip(clip, 8).frames.copy()
    height, width = frames.shape[1:3]
    side = min(240, height // 2)  # a third of a 720p frame's height; smaller clips (--quick) get a smaller face
    faces, _ = render_clip("happiness", 0, 8, side)
    top, left = (height - side) // 2, (width - side) // 2 + side // 2
    frames[:, top : top + side, left : left + side] = faces

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


def run(settings: Settings):
    return benchmark_decode(settings.quick, settings.workdir)
