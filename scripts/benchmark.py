"""Side-by-side benchmarks: each row is measured against its baseline in the same run and reported as a ratio.

    python scripts/benchmark.py [--quick] [--json FILE]

Sections (one module each under `scripts/benchmarks/`, whose docstrings say what they measure): inference, train,
memory, metric, decode, clip, predict, export, deploy, datasets, timeline, live.

Absolute times are printed with the machine they came from; compare ratios, not seconds, across machines.
"""

import argparse
from pathlib import Path

from benchmarks import (
    clip_memory,
    datasets_source,
    decode,
    deploy,
    export,
    inference,
    live,
    memory,
    metric,
    predict,
    timeline,
    train,
)
from benchmarks.harness import Section, Settings, print_header, print_rows, write_ratios


SECTIONS: dict[str, Section] = {
    "inference": inference.run,
    "train": train.run,
    "memory": memory.run,
    "metric": metric.run,
    "decode": decode.run,
    "clip": clip_memory.run,
    "predict": predict.run,
    "export": export.run,
    "deploy": deploy.run,
    "datasets": datasets_source.run,
    "timeline": timeline.run,
    "live": live.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shrink every size so the script ends in about a minute")
    parser.add_argument("--json", type=Path, help="write the ratios (and times) to this JSON file")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--workdir", type=Path, default=Path("outputs/benchmark"), help="where test clips are cached")
    parser.add_argument("--memory_probe", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    parser.add_argument("--clip_probe", nargs=2, metavar=("PATH", "WAY"), help=argparse.SUPPRESS)
    parser.add_argument("--patch_size", type=int, default=32, help="vision patch: 32 (ViT-B/32) or 16 (ViT-B/16)")
    parser.add_argument(
        "--trained_checkpoint",
        help="inference: also measure bf16 decision agreement of this trained HESP folder; clip: how far its logits move",
    )
    parser.add_argument(
        "--trained_clips",
        help="CSV (video_path column) of the clips for --trained_checkpoint (default: the demo's cached test list)",
    )
    args = parser.parse_args()
    if args.memory_probe is not None:  # the memory section's subprocess
        memory.memory_probe(bool(args.memory_probe), args.quick, args.patch_size)
        return
    if args.clip_probe is not None:  # the clip section's subprocess
        clip_memory.clip_probe(*args.clip_probe)
        return
    settings = Settings(args.quick, args.workdir, args.patch_size, args.trained_checkpoint, args.trained_clips)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    print_header()
    ratios: dict[str, float] = {}
    for name, run in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        rows, section_ratios = run(settings)
        ratios.update(section_ratios)
        print_rows(name, rows)
    if args.json:
        write_ratios(args.json, ratios)


if __name__ == "__main__":
    main()
