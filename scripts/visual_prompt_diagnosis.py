"""Why the pixel-space visual prompt derails training: two measurements on the synthetic protocol.

    python scripts/visual_prompt_diagnosis.py --checkpoint RUN --data_seed 0
        [--known fear,happiness,surprise,contempt,helplessness,disappointment] [--data_dir outputs/synthetic]

1. With the visual prompt of a trained checkpoint (`RUN`, trained with `--use_visual_prompt true`) and with other
   patches of the same size at the same place: the leave-one-out nearest-prototype accuracy of the frozen CLIP's
   frame-mean features of the known training clips. A prompt that lowers it hides what tells the expressions apart.
2. At initialisation (a fresh model on the same CLIP and list, the prompt at the checkpoint's location, one batch of
   32 training clips): the gradient of each loss term with respect to the prompt, its norm and its cosine with the
   total, i.e. which term drives the prompt's first steps.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hesp_hf import HESPForOpenSetVideoClassification, HESPVideoProcessor
from hesp_hf.data import read_annotation
from hesp_hf.data.decoding import sample_clip
from hesp_hf.data.presets import get_preset
from hesp_hf.embedded.defaults import embedded_clip_path
from hesp_hf.embedded.synthetic import CLASSES, SyntheticSpec, write_synthetic_dataset
from hesp_hf.evaluation import markdown_table
from hesp_hf.training.prototypes import leave_one_out_accuracy


def training_clips(data: Path, known: list[str], num_frames: int, processor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised frames `(N, T, C, H, W)` and labels of the known training clips."""
    rows = [
        r
        for r in read_annotation(data / "train.csv", get_preset("custom", list(CLASSES)))
        if CLASSES[r.label] in known
    ]
    labels = torch.tensor([known.index(CLASSES[r.label]) for r in rows])
    videos = [sample_clip(r.path, num_frames).frames for r in rows]
    return processor(videos, return_tensors="pt", do_sample_frames=False)["pixel_values_videos"], labels


@torch.no_grad()
def prompted_accuracy(model, pixels: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor) -> float:
    """Leave-one-out accuracy of the frame-mean features with `delta` (a [0, 1]-pixel patch) as the visual prompt."""
    model.visual_prompt.delta.copy_(delta)
    flat = pixels.flatten(0, 1)
    prompted = model.add_visual_prompt(flat, model.class_text_embeds())
    features = F.normalize(model.get_image_features(pixel_values=prompted).pooler_output, dim=-1)
    return leave_one_out_accuracy(features.view(*pixels.shape[:2], -1).mean(dim=1), labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run trained with the visual prompt")
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--known", default="fear,happiness,surprise,contempt,helplessness,disappointment")
    parser.add_argument("--data_dir", type=Path, default=Path("outputs/synthetic"))
    args = parser.parse_args()
    torch.manual_seed(0)
    known = args.known.split(",")
    data = write_synthetic_dataset(args.data_dir, SyntheticSpec(train_per_class=30, seed=args.data_seed))
    model = HESPForOpenSetVideoClassification.from_pretrained(args.checkpoint).eval()
    if not model.config.use_visual_prompt:
        parser.error(
            f"{args.checkpoint} was trained without the visual prompt: train one with --use_visual_prompt true."
        )
    if sorted(model.config.known_labels) != sorted(known):
        parser.error(f"{args.checkpoint} knows {model.config.known_labels}, not --known {known}.")
    known = model.config.known_labels
    processor = HESPVideoProcessor.from_pretrained(args.checkpoint)
    pixels, labels = training_clips(data, known, model.config.num_frames, processor)

    learned = model.visual_prompt.pixel_delta().detach().clone()  # what the prompt adds, bound included
    model.config.visual_prompt_bound = None  # each patch below is added as it is
    generator = torch.Generator().manual_seed(0)
    patches = {
        "none (the frozen CLIP)": torch.zeros_like(learned),
        "the learned prompt": learned,
        "the learned prompt x 0.3": 0.3 * learned,
        "the learned prompt x 0.1": 0.1 * learned,
        "random signs x 0.1": 0.1 * torch.sign(torch.randn(learned.shape, generator=generator)),
        "random signs x 0.05": 0.05 * torch.sign(torch.randn(learned.shape, generator=generator)),
        "constant +0.1": torch.full_like(learned, 0.1),
    }
    rows = [
        [name, f"{float(delta.abs().max()):.3f}", f"{prompted_accuracy(model, pixels, labels, delta):.3f}"]
        for name, delta in patches.items()
    ]
    print(
        f"Known {', '.join(known)}, data seed {args.data_seed}, prompt centre {model.config.visual_prompt_center}:\n"
    )
    print(markdown_table(["patch at the prompt's place", "largest pixel change", "leave-one-out accuracy"], rows))

    fresh = HESPForOpenSetVideoClassification.from_clip(
        embedded_clip_path(), labels=known, num_frames=model.config.num_frames,
        temporal_pooling=model.config.temporal_pooling, visual_prompt_center=model.config.visual_prompt_center,
    ).train()  # fmt: skip
    with torch.no_grad():  # a zero prompt has a gradient too; a tiny one breaks ties the same way every run
        fresh.visual_prompt.delta.normal_(std=0.01, generator=generator)
    batch = torch.from_numpy(np.random.default_rng(0).choice(len(labels), min(32, len(labels)), replace=False))
    outputs = fresh(pixel_values_videos=pixels[batch], labels=labels[batch])
    gradients = {}
    for name, term in outputs.loss_terms.items():
        (gradient,) = torch.autograd.grad(term, fresh.visual_prompt.delta, retain_graph=True, allow_unused=True)
        gradients[name] = torch.zeros_like(fresh.visual_prompt.delta) if gradient is None else gradient
    total = sum(gradients.values())
    rows = [
        [name, f"{float(outputs.loss_terms[name].detach()):.3f}", f"{float(g.norm()):.4f}",
         f"{float((g * total).sum() / (g.norm() * total.norm() + 1e-12)):+.3f}"]
        for name, g in gradients.items()
    ]  # fmt: skip
    print("\nAt initialisation, one batch: each loss term's gradient with respect to the visual prompt\n")
    print(markdown_table(["loss term", "value", "gradient norm", "cosine with the total"], rows))


if __name__ == "__main__":
    main()
