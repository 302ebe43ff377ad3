"""Tiny CLIP checkpoints with a character-level tokenizer, written locally (no download), for tests and demos.

Real CLIP weights and vocabulary cannot be fetched on every machine; a tiny `CLIPModel` saved with a `CLIPTokenizer`
whose vocabulary is single characters exercises exactly the loading paths of `openai/clip-vit-base-patch32`.
"""

import string
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer


BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"


def save_char_tokenizer(directory: str | Path) -> CLIPTokenizer:
    """Save a `CLIPTokenizer` over single characters (each also in its word-final `</w>` form), with no merges
    (`vocab.json`, an empty `merges.txt` and the fast `tokenizer.json`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    characters = string.ascii_lowercase + string.digits + string.punctuation
    vocab = {BOS_TOKEN: 0, EOS_TOKEN: 1}
    for character in characters:
        vocab[character] = len(vocab)
        vocab[character + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[],
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_clip_config(
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 2,
    projection_dim: int = 32,
    vocab_size: int | None = None,
) -> CLIPConfig:
    """A CLIP configuration in the spirit of transformers' model tests: 2 layers, width 32, 32x32 images, patch 8."""
    vocab_size = vocab_size or 2 + 2 * len(string.ascii_lowercase + string.digits + string.punctuation)
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    vision = {
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def save_tiny_clip(directory: str | Path, seed: int = 0, **config_kwargs) -> Path:
    """Write a randomly initialised tiny `CLIPModel` and its character-level tokenizer to `directory`."""
    directory = Path(directory)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's random state
        torch.manual_seed(seed)
        model = CLIPModel(tiny_clip_config(**config_kwargs)).eval()
    model.save_pretrained(directory)
    save_char_tokenizer(directory)
    return directory
