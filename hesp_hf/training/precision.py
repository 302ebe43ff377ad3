"""bf16 training: the frozen CLIP towers stored in bfloat16 while the prompts train in float32."""

import logging

import torch


logger = logging.getLogger(__name__)


class FrozenTowersInBF16:
    """Frozen CLIP towers stored in bfloat16 while training with bf16 autocast.

    Why: autocast re-casts every weight to bfloat16 at every call, and it caches the cast only for weights that
    require gradients, so the frozen towers (most of HESP's work) would be converted again at every layer of every
    step, and held in memory twice. Stored in bfloat16 they are not: on a CPU with native bf16 (AVX512-BF16, no AMX;
    ViT-B/32, batch 8 x 8 frames, `scripts/benchmark.py --only train`, in rotation) the step took 5.34 s against
    5.71 s with autocast alone and 10.28 s in float32 (the gain over autocast alone grows as the batch shrinks).
    Frozen weights never change, so nothing is lost by training on a bfloat16 copy: their exact float32 values are
    kept aside, written into every checkpoint (`float32_state_dict`) and put back when training ends (`restore`).
    The trained prompts stay float32.

    On the CPU the towers also run eager attention while training in bf16: PyTorch's fused CPU attention
    (`scaled_dot_product_attention`) is slow in bfloat16 for CLIP's short sequences, forward + backward of one layer
    (64 frames x 12 heads, this 2-core AVX-512 CPU) 0.070 s against 0.022 s eager at 50 tokens (ViT-B/32), 0.076 s
    against 0.047 s at 197 (ViT-B/16, 16 frames); in float32 the fused one is as fast or faster (0.032 / 0.058 s
    against 0.033 / 0.067 s), so float32 keeps it. The model's own setting comes back with `restore`.
    """

    TOWERS = ("vision_model", "visual_projection", "text_model", "text_projection")

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.float32: dict[str, torch.Tensor] = {}
        self._attention: str | None = None  # the model's own attention, while eager attention stands in for it

    @property
    def active(self) -> bool:
        return bool(self.float32)

    def _frozen(self) -> dict[str, torch.Tensor]:
        return {
            name: parameter
            for name, parameter in self.model.named_parameters()
            if name.split(".", 1)[0] in self.TOWERS
            and not parameter.requires_grad
            and parameter.dtype == torch.float32
        }

    @torch.no_grad()
    def cast(self) -> None:
        for name, parameter in self._frozen().items():
            self.float32[name] = parameter.detach().to("cpu", copy=True)
            parameter.data = parameter.data.to(torch.bfloat16)
        if self.float32:
            logger.info("bf16: %d frozen tower tensors run in bfloat16 while training.", len(self.float32))
        if next(self.model.parameters()).device.type == "cpu" and self.model.config._attn_implementation != "eager":
            self._attention = self.model.config._attn_implementation
            self.model.set_attn_implementation("eager")
            logger.info("bf16 on the CPU: eager attention while training (%s after).", self._attention)

    @torch.no_grad()
    def restore(self) -> None:
        parameters = dict(self.model.named_parameters())
        for name, value in self.float32.items():
            parameters[name].data = value.to(parameters[name].device)
        self.float32.clear()
        if self._attention is not None:
            self.model.set_attn_implementation(self._attention)
            self._attention = None

    def float32_state_dict(self, state_dict: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        state_dict = dict(state_dict if state_dict is not None else self.model.state_dict())
        state_dict.update(self.float32)
        return state_dict
