"""Online pruning: bound the non-zero parameters of experts and selector (TAME, Zhu et al.).

An expert is pruned when it stops being active: a layer-wise magnitude (L1,
unstructured) pruning of its weight matrices, made permanent, so an inactive
expert keeps `1 - sparsity` of its weights. Biases and the fixed input scaling
stay dense. How far to prune is the caller's choice (TAME: as far as the expert
keeps its answers on its buffer); a network that is refitted after pruning (the
selector) is refitted with its masks held. An expert that becomes active again
trains densely and is pruned anew when it is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, PRUNABLE)]


@torch.no_grad()
def _masks(module: nn.Module, sparsity: float) -> list[torch.Tensor]:
    """Per prunable layer: keep-mask zeroing its `sparsity` share of smallest |w| (L1)."""
    masks = []
    for layer in _layers(module):
        w = layer.weight.abs()
        k = round(sparsity * w.numel())
        # the k-th smallest |w| is the cut (numpy's partition: 5x faster than torch.kthvalue, 8x
        # than topk, same value); ties at the cut, such as weights already zero, are pruned too
        cut = float(np.partition(w.flatten().cpu().numpy(), k - 1)[k - 1]) if k else -1.0
        masks.append(w > cut)
    return masks


def prune_weights(
    module: nn.Module, sparsity: float, finetune: Callable[[], None] | None = None
) -> nn.Module:
    """Zero the `sparsity` share of smallest-magnitude weights in every prunable layer.

    `finetune` runs while the masks hold (`torch.nn.utils.prune`: pruned weights stay
    zero, and the optimiser keeps its parameters since pruning re-registers the same
    tensors); the masks are then made permanent: plain weights with zeros, no hooks.
    """
    if sparsity <= 0:
        return module
    layers, masks = _layers(module), _masks(module, sparsity)
    if finetune is None:  # the cheap path: no reparametrisation needed
        with torch.no_grad():
            for layer, mask in zip(layers, masks, strict=True):
                layer.weight.mul_(mask)
        return module
    for layer, mask in zip(layers, masks, strict=True):
        prune.custom_from_mask(layer, "weight", mask)
    finetune()
    for layer in layers:
        prune.remove(layer, "weight")
    return module


def prune_first(module: nn.Module, sparsities: Iterable[float], keeps: Callable[[], bool]) -> float:
    """Prune to the first of `sparsities` at which `keeps()` holds for the pruned module, and
    return it; 0.0, with the module unchanged, when none does.

    Each try prunes in place and an accepted one stays: the masks are computed once per try,
    not again to make the chosen sparsity permanent."""
    layers = _layers(module)
    saved = [layer.weight.detach().clone() for layer in layers]
    for sparsity in sparsities:
        prune_weights(module, sparsity)
        if keeps():
            return sparsity
        with torch.no_grad():  # back to dense for the next try
            for layer, w in zip(layers, saved, strict=True):
                layer.weight.copy_(w)
    return 0.0


def count_nonzero(module: nn.Module) -> int:
    """Non-zero trainable parameters (what a sparse store would keep)."""
    return sum(int(torch.count_nonzero(p)) for p in module.parameters())


def count_parameters(module: nn.Module) -> int:
    """All trainable parameters (the dense size)."""
    return sum(p.numel() for p in module.parameters())
