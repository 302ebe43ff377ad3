"""A web page for people who do not write code: upload a video or record one with the webcam, and see the expression
the model recognises (or "unknown"), the probabilities, the frames it saw and, for a longer video, the timeline.

    hesp-app --checkpoint runs/dfew-1              # then open http://127.0.0.1:7860
    hesp-app                                       # the checkpoint `hesp-demo` writes (outputs/demo)
    hesp-app --checkpoint org/hesp-dfew --host 0.0.0.0 --port 8080 --max_file_size 500mb

The checkpoint is a trained HESP folder or Hub id, or an ONNX export folder; $HESP_CHECKPOINT gives it where no
option can be passed (a Space runs `app.py`). Needs the `app` extra: pip install "hesp-hf[app]".
"""

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from hesp_hf.commands.cli import ArgumentParser, run_command


logger = logging.getLogger("hesp-app")

DEMO_CHECKPOINT = Path("outputs/demo")  # where `hesp-demo` (`make demo` in a checkout) writes its model
NO_CHECKPOINT = (
    "hesp-app: no --checkpoint given and no demo model at outputs/demo: run `hesp-demo` here to make one "
    "(`make demo` in a checkout; under 3 minutes on 2 CPU cores), or pass --checkpoint FOLDER_OR_HUB_ID"
)


def port_number(text: str) -> int:
    """--port: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return port


def file_size(text: str) -> str | int | None:
    """--max_file_size: what Gradio's upload limit takes (a number of bytes, or a number with b/kb/mb/gb/tb), or
    "none"; checked here, before the model loads, rather than by Gradio's parser at launch."""
    if text.strip().lower() == "none":
        return None
    if text.strip().isdigit():
        return int(text)
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(b|kb|mb|gb|tb)\s*", text, flags=re.IGNORECASE):
        raise argparse.ArgumentTypeError(f'expected a size such as "50mb", "1gb" or bytes, or "none"; got {text!r}')
    return text.strip()


def main(argv: list[str] | None = None, block: bool = True) -> object:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        default=os.environ.get("HESP_CHECKPOINT"),
        help="a trained HESP folder or Hub id, or an ONNX export folder (default: $HESP_CHECKPOINT, else outputs/demo)",
    )
    parser.add_argument("--host", default=None, help="address to serve on (default 127.0.0.1; 0.0.0.0: every one)")
    parser.add_argument("--port", type=port_number, default=None, help="port (default 7860, or the next free one)")
    parser.add_argument(
        "--max_file_size",
        type=file_size,
        default="200mb",
        help='largest upload, e.g. "50mb" or "1gb"; "none" for no limit (200mb)',
    )
    parser.add_argument("--concurrency", type=int, default=2, help="videos analysed at once; others wait (2)")
    parser.add_argument(
        "--keep_results_s", type=int, default=600, help="seconds the result files stay downloadable (600)"
    )
    parser.add_argument("--window_s", type=float, default=2.0, help="timeline: seconds behind each decision (2.0)")
    parser.add_argument("--stride_s", type=float, default=0.5, help="timeline: seconds between decisions (0.5)")
    parser.add_argument(
        "--no_describe_unknown", action="store_true", help="do not name the closest description of unknown clips"
    )
    parser.add_argument(
        "--known_acceptance",
        type=float,
        default=None,
        help="re-decide at this split conformal level from the checkpoint's saved calibration scores (default: the "
        "level it was trained at)",
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is available")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    checkpoint = args.checkpoint
    if checkpoint is None:
        if not (DEMO_CHECKPOINT / "config.json").is_file():
            sys.exit(NO_CHECKPOINT)
        checkpoint = str(DEMO_CHECKPOINT)
    # No usage reports leave the machine: the videos may be of patients or study participants.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from hesp_hf.app.page import PageSettings, build_page, launch
    except ImportError as error:
        raise ImportError(f'hesp-app needs Gradio: pip install "hesp-hf[app]" ({error})') from error
    settings = PageSettings(
        concurrency=args.concurrency,
        max_file_size=args.max_file_size,
        keep_results_s=args.keep_results_s,
        window_s=args.window_s,
        stride_s=args.stride_s,
        checkpoint=checkpoint,
    )

    import torch

    from hesp_hf.commands.predict import state_guarantee, unknown_describer
    from hesp_hf.inference.deployment import load_for_prediction

    model, processor = load_for_prediction(checkpoint)
    state_guarantee(model.config, checkpoint, args.known_acceptance)  # --known_acceptance moves the threshold
    if not args.cpu and torch.cuda.is_available() and hasattr(model, "to"):
        model = model.to("cuda")
    describer = None if args.no_describe_unknown else unknown_describer(model, checkpoint)
    page = build_page(model, processor, settings, describer=describer)
    logger.info("Serving %s (%d known expressions)", checkpoint, len(model.config.known_labels))
    return launch(page, host=args.host, port=args.port, block=block)


def cli() -> None:
    """The `hesp-app` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
