"""The paper's optimiser: SGD with momentum over HESP's trainable parameters, weight decay on the matrices only, and
the released code's normalised-gradient step for the pixel-space prompts as an option."""

import torch


# The pixel-space prompts: the visual prompt and the negative visual prompt images.
VISUAL_PROMPT_PARAMETER = "visual_prompt.delta"
PIXEL_PROMPT_PARAMETERS = (VISUAL_PROMPT_PARAMETER, "reciprocal_points.images")


class PromptSGD(torch.optim.SGD):
    """SGD whose parameter groups with `normalized_step` set take `p -= normalized_step * g / ||g||` instead (the
    released code's update of its pixel-space prompts); every other group is plain SGD."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        held = []
        for group in self.param_groups:
            if group.get("normalized_step"):
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    norm = param.grad.norm()
                    if norm > 0:
                        param.add_(param.grad / norm, alpha=-group["normalized_step"])
                    held.append((param, param.grad))
                    param.grad = None  # plain SGD skips parameters without a gradient
        super().step()
        for param, grad in held:
            param.grad = grad
        return loss


def prompt_sgd(
    model: torch.nn.Module,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    pixel_prompt_step: float = 0.0,
    visual_prompt_lr_scale: float = 1.0,
) -> PromptSGD:
    """[`PromptSGD`] over the model's trainable parameters: weight decay on matrices, none on vectors and scalars
    (the radius, temporal query and gains); the visual prompt at `visual_prompt_lr_scale` times the learning rate,
    without weight decay; with `pixel_prompt_step` > 0 the pixel-space prompts take the normalised-gradient step of
    that size instead."""
    if not visual_prompt_lr_scale > 0:
        raise ValueError(f"visual_prompt_lr_scale must be > 0, got {visual_prompt_lr_scale}.")
    decay, no_decay, pixel, visual_prompt = [], [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if pixel_prompt_step > 0 and name in PIXEL_PROMPT_PARAMETERS:
            pixel.append(param)
        elif name == VISUAL_PROMPT_PARAMETER and visual_prompt_lr_scale != 1.0:
            visual_prompt.append(param)
        elif param.ndim <= 1:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if pixel:
        groups.append({"params": pixel, "weight_decay": 0.0, "normalized_step": pixel_prompt_step})
    if visual_prompt:
        groups.append(
            {"params": visual_prompt, "weight_decay": weight_decay, "lr": learning_rate * visual_prompt_lr_scale}
        )
    return PromptSGD([group for group in groups if group["params"]], lr=learning_rate, momentum=momentum)
