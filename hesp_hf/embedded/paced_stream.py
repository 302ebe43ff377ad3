"""A recording fed into a pipe at the pace it plays (as `ffmpeg -re ... -f mpegts -` would), to try and test the live
timeline without a camera: each packet's bytes are written when the stream reaches its decoding time.

    python -m hesp_hf.embedded.paced_stream clip.ts | hesp-timeline --live - --checkpoint outputs/demo --output live/

Options reproduce what live streams do: a pause (a stalled network), a cut in the middle of a packet (a connection
lost), and holding the pipe open silently at the end (a camera that stops sending).
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Pacing:
    """`pause_at_s`/`pause_s`: stop writing for `pause_s` seconds once the stream reaches `pause_at_s`;
    `cut_at`: stop for good after this share (0-1) of the file's bytes, plus 97 bytes so that the cut falls inside a
    188-byte MPEG-TS packet; `hold_s`: keep the pipe open without writing this long before closing it;
    `speed`: the pace relative to real time."""

    pause_at_s: float | None = None
    pause_s: float = 0.0
    cut_at: float | None = None
    hold_s: float = 0.0
    speed: float = 1.0


def packet_schedule(path: str | Path) -> list[tuple[float, int]]:
    """(decoding time in seconds from the first packet, byte offset where the packet after it starts) for each
    video packet of an MPEG-TS file, in file order; the last ends at the file's end."""
    import av

    times, offsets = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.dts is None or packet.pos is None or packet.pos < 0:
                continue
            times.append(float(packet.dts * stream.time_base))
            offsets.append(int(packet.pos))
    size = Path(path).stat().st_size
    start = times[0] if times else 0.0
    ends = offsets[1:] + [size]
    return [(t - start, end) for t, end in zip(times, ends, strict=True)]


def feed(path: str | Path, fd: int, pacing: Pacing | None = None) -> int:
    """Write the bytes of `path` (MPEG-TS) to the descriptor `fd` at the stream's pace; returns the bytes written.
    The descriptor is left open (the caller closes it, which ends the stream)."""
    pacing = pacing or Pacing()
    data = Path(path).read_bytes()
    limit = len(data) if pacing.cut_at is None else min(len(data), int(len(data) * pacing.cut_at) + 97)
    written, paused = 0, False
    began = time.monotonic()
    for at, end in packet_schedule(path):
        if pacing.pause_at_s is not None and not paused and at >= pacing.pause_at_s:
            time.sleep(pacing.pause_s)
            began += pacing.pause_s
            paused = True
        delay = began + at / pacing.speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        end = min(end, limit)
        while written < end:
            written += os.write(fd, data[written:end])
        if written >= limit:
            break
    time.sleep(pacing.hold_s)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="an MPEG-TS recording")
    parser.add_argument("--pause_at_s", type=float, default=None)
    parser.add_argument("--pause_s", type=float, default=0.0)
    parser.add_argument("--cut_at", type=float, default=None, help="share of the bytes after which the stream breaks")
    parser.add_argument("--hold_s", type=float, default=0.0)
    parser.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args()
    pacing = Pacing(args.pause_at_s, args.pause_s, args.cut_at, args.hold_s, args.speed)
    try:
        feed(args.file, sys.stdout.fileno(), pacing)
    except BrokenPipeError:  # the reader ended first
        pass


if __name__ == "__main__":
    main()
