"""Build the embedded tiny CLIP: contrastive pretraining on single synthetic face frames and captions of their visible
facial actions ("brows raised, eyes wide, mouth open"), never emotion names.

    python scripts/pretrain_tiny_clip.py [--output hesp_hf/embedded/assets/tiny-face-clip] [--steps 3000] [--clips 2640]

Deterministic for a seed (one thread, fixed data and step count); rebuilding is not part of `make demo`. The result (a few MB of
safetensors with its character-level tokenizer and the pixel statistics in `preprocessor_config.json`) is committed
inside the package and is the demo's default backbone: HESP then trains only its prompts and modules on frozen towers,
as with the real CLIP. Frames of every synthetic class are used here (real CLIP, too, saw all expressions in its
pretraining); the demo's clips come from other seeds.
"""

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from hesp_hf.embedded.synthetic import CLASSES, caption, render_clip
from hesp_hf.embedded.tiny_clip import save_char_tokenizer


logger = logging.getLogger("pretrain_tiny_clip")


def make_frames(num_clips: int, frames_per_clip: int, size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Frames of `num_clips` clips spread over all classes (`frames_per_clip` random frames each) and captions."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for number in range(num_clips):
        label = CLASSES[number % len(CLASSES)]
        frames, actions = render_clip(label, seed=10_000_000 + seed * 100_000 + number, num_frames=16, size=size)
        for t in rng.choice(16, frames_per_clip, replace=False):
            images.append(frames[t])
            captions.append(caption(actions[t]))
    return np.stack(images), captions


def soft_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss where every pair with the same caption counts as a positive (many frames share one)."""
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    targets = same / same.sum(dim=1, keepdim=True)
    return (
        -(targets * logits.log_softmax(dim=1)).sum(1).mean() - (targets * logits.log_softmax(dim=0)).sum(0).mean()
    ) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("hesp_hf/embedded/assets/tiny-face-clip"))
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps (batch 64, cosine schedule)")
    parser.add_argument("--clips", type=int, default=2640, help="synthetic clips to draw frames from")
    parser.add_argument("--frames_per_clip", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # bit-for-bit reproducible on a CPU

    start = time.perf_counter()
    images, captions = make_frames(args.clips, args.frames_per_clip, args.size, args.seed)
    held_out = len(images) // 10
    logger.info(
        "%d frames, %d distinct captions, in %.0f s", len(images), len(set(captions)), time.perf_counter() - start
    )
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean, std = pixels[held_out:].mean(dim=(0, 2, 3)), pixels[held_out:].std(dim=(0, 2, 3))
    pixels = (pixels - mean[:, None, None]) / std[:, None, None]  # per-channel standardisation

    args.output.mkdir(parents=True, exist_ok=True)
    tokenizer = save_char_tokenizer(args.output)
    vocabulary = sorted(set(captions))
    token_ids = tokenizer(vocabulary, padding=True, return_tensors="pt")["input_ids"]
    caption_index = torch.tensor([vocabulary.index(c) for c in captions])
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 96, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 96, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
            "image_size": args.size, "patch_size": 8,
        },
        projection_dim=64,
    )  # fmt: skip
    model = CLIPModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    warmup, batch = 100, 64
    generator = torch.Generator().manual_seed(args.seed)
    train_index = torch.arange(held_out, len(images))
    model.train()
    for step in range(args.steps):
        lr_factor = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = 5e-4 * lr_factor
        chosen = train_index[torch.randint(len(train_index), (batch,), generator=generator)]
        image_features = model.get_image_features(pixel_values=pixels[chosen]).pooler_output
        text_features = model.get_text_features(input_ids=token_ids[caption_index[chosen]]).pooler_output
        same = (caption_index[chosen][:, None] == caption_index[chosen][None, :]).float()
        loss = soft_clip_loss(image_features, text_features, model.logit_scale.exp(), same)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0:
            logger.info("step %d/%d loss %.4f", step, args.steps, loss.item())

    model.eval()
    with torch.no_grad():
        image_features = F.normalize(model.get_image_features(pixel_values=pixels[:held_out]).pooler_output, dim=-1)
        text_features = F.normalize(model.get_text_features(input_ids=token_ids).pooler_output, dim=-1)
        retrieved = (image_features @ text_features.T).argmax(dim=1)
    accuracy = (retrieved == caption_index[:held_out]).float().mean().item()
    logger.info("held-out caption retrieval accuracy %.3f over %d captions", accuracy, len(vocabulary))
    model.save_pretrained(args.output)
    image_size = {"height": args.size, "width": args.size}
    (args.output / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "image_mean": mean.tolist(),
                "image_std": std.tolist(),
                "size": {"shortest_edge": args.size},
                "crop_size": image_size,
                "do_center_crop": True,
                "resample": 3,
            },
            indent=2,
        )
    )
    (args.output / "build_info.json").write_text(
        json.dumps(
            {
                "script": "scripts/pretrain_tiny_clip.py",
                # what a model card says of this backbone (hesp_hf.hub.model_card.describe_backbone)
                "description": "the embedded tiny CLIP of hesp-hf, pretrained on synthetic face frames only",
                "synthetic_pretraining": True,
                "arguments": {k: str(v) for k, v in vars(args).items()},
                "frames": len(images),
                "distinct_captions": len(vocabulary),
                "steps": args.steps,
                "held_out_caption_retrieval_accuracy": round(accuracy, 4),
            },
            indent=2,
        )
    )
    logger.info("saved to %s after %d steps in %.0f s", args.output, args.steps, time.perf_counter() - start)


if __name__ == "__main__":
    main()
