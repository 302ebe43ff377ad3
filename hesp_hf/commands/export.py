"""Export a trained HESP checkpoint for inference: the inference-only checkpoint (no text tower, same logits), an
ONNX graph for ONNX Runtime, or that graph with the vision tower's Linears in int8.

    hesp-export --checkpoint runs/dfew-1 --output_dir runs/dfew-1-lean
    hesp-export --checkpoint runs/dfew-1 --output_dir runs/dfew-1-onnx --onnx
    hesp-export --checkpoint runs/dfew-1 --output_dir runs/dfew-1-int8 --int8

Every folder carries the processor and `config.json` (labels, threshold); `hesp-predict --checkpoint <folder>` and
`pipeline("video-classification", model=<lean folder>)` take them. The ONNX and int8 exports need
`pip install hesp-hf[onnx]` and are checked before they are kept: the ONNX graph against eager float32, the int8
graph against the float32 graph (a checkpoint int8 cannot represent is refused).
"""

import argparse
import logging

from hesp_hf.commands.cli import ArgumentParser, run_command
from hesp_hf.inference.export import export_inference_only, export_onnx
from hesp_hf.inference.quantization import export_int8


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a trained HESP folder or Hub id")
    parser.add_argument("--output_dir", required=True, help="a new (or empty) folder for the export")
    parser.add_argument("--onnx", action="store_true", help="export an ONNX graph instead of a lean checkpoint")
    parser.add_argument(
        "--int8", action="store_true", help="export the ONNX graph with the vision tower's Linears in int8 (CPU)"
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.onnx and args.int8:
        parser.error("--onnx and --int8 are two exports: choose one (--int8 is an ONNX graph too)")
    if args.int8:
        export_int8(args.checkpoint, args.output_dir, opset=args.opset)
    elif args.onnx:
        export_onnx(args.checkpoint, args.output_dir, opset=args.opset)
    else:
        if args.opset is not None:
            parser.error("--opset applies to --onnx and --int8 exports only")
        export_inference_only(args.checkpoint, args.output_dir)


def cli() -> None:
    """The `hesp-export` command."""
    run_command(main)


if __name__ == "__main__":
    cli()
