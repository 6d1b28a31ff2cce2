"""Which part of the merged feature each cell of the HIH decimal head can see.

The published decimal head (``models.heads.DecimalHead``: 1x1 widen -> max-pool 3x3/2
without padding -> DownBlocks of stride 2 -> 1x1 project -> 1x1 predict) is not
translation-equivariant: output cell (cy, cx) of its k x k map is the logit of decimal cell
(cy, cx), but it is computed from a window of the H x H feature around (cy, cx) scaled by
H / k, not from the landmark's own pixel. A landmark whose pixel lies outside the window of its
true decimal cell cannot be seen by the only logit that would be right, so (by this argument)
the head can only guess there. ``decimal_cell_windows`` measures the windows,
``inside_window`` says which landmarks fall in theirs (``tools/decimal_rf_split.py``).

The windows are measured by autograd, exactly: on a copy of the head with every convolution
weight positive, no biases and BatchNorm reset to the identity (eval mode), every ReLU passes
and no two paths can cancel, so a position's input gradient is non-zero iff the position is
connected to the cell -- except through max-pooling, which routes the gradient of each
window to its maximum only. The inputs therefore put a strictly larger value ("bump") on
every position whose (y mod 3, x mod 3) equals one of the 9 residues: any 3 consecutive
positions hold each residue once, so in the input of residue r each 3x3 pooling window has
exactly one bump, its unique maximum, and every position is that maximum of every window
containing it in the input of its own residue. The union over the 9 inputs (plus a few
random ones, which can only add connected positions) is the geometric receptive field,
clipped to the map (zero padding carries no gradient). ``analytic_decimal_windows`` derives
the same from the layer geometry (kernel, stride, padding); the tests check they agree.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

POOL_KERNEL, POOL_STRIDE = 3, 2  # the trunk's F.max_pool2d(x, 3, 2), no padding


def _narrowed(head: nn.Module) -> nn.Module:
    """Copy of ``head`` with every conv 1 -> 1 channel and every BatchNorm 1 channel wide.

    A dense convolution (groups 1) with positive weights connects every input channel to
    every output channel, so the spatial support of the gradient does not depend on the
    widths: the 1-channel copy has the same windows at a fraction of the cost (the published
    384-wide head on a 64x64 map takes minutes at full width on one CPU core).
    """
    head = copy.deepcopy(head)
    for parent in list(head.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                if child.groups != 1:
                    raise ValueError(f"{name}: grouped convolutions cannot be narrowed")
                setattr(parent, name, nn.Conv2d(1, 1, child.kernel_size, child.stride,
                                                child.padding, child.dilation,
                                                bias=child.bias is not None,
                                                padding_mode=child.padding_mode))
            elif isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.BatchNorm2d(1))
    return head


def _positive_copy(head: nn.Module) -> nn.Module:
    """Copy of ``head`` in float64, eval mode, positive conv weights, identity BatchNorm."""
    head = copy.deepcopy(head).double().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in head.modules():
            if isinstance(module, nn.Conv2d):
                weight = torch.rand(module.weight.shape, generator=generator, dtype=torch.float64)
                module.weight.copy_(0.5 + 0.5 * weight)  # in [0.5, 1): constant-ish, > 0
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()  # mean 0, var 1
                if module.affine:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
    return head


def _probe_inputs(channels: int, size: int, random_inputs: int) -> torch.Tensor:
    """9 residue-bump inputs (see the module docstring) + ``random_inputs`` random ones."""
    generator = torch.Generator().manual_seed(0)
    count = POOL_KERNEL**2 + random_inputs
    x = torch.rand(count, channels, size, size, generator=generator, dtype=torch.float64)
    pos = torch.arange(size)
    for r in range(POOL_KERNEL**2):
        ry, rx = divmod(r, POOL_KERNEL)
        bump = (pos[:, None] % POOL_KERNEL == ry) & (pos[None, :] % POOL_KERNEL == rx)
        x[r] += 10.0 * bump  # base < 1 < bump: the bump is each window's unique maximum
    return x


def decimal_cell_windows(head: nn.Module, channels: int, size: int,
                         random_inputs: int = 4, narrow: bool = True) -> torch.Tensor:
    """Receptive-field window of every output cell of a decimal head, measured by autograd.

    ``head`` maps (B, channels, size, size) to (B, N, k, k) logits; it is not modified (a
    positive copy is probed, see the module docstring). Returns (k, k, 2, 2) long:
    ``windows[cy, cx, axis, 0/1]`` = inclusive [lo, hi] of the input x (axis 0) and y
    (axis 1) whose gradient to cell (cy, cx)'s logit, summed over landmarks, is non-zero.
    Raises if a cell's support is not a rectangle (it is for the DecimalHead).
    ``narrow``: probe a 1-channel copy (``channels`` is then not used; same windows, see
    ``_narrowed``); False probes the head at its own widths with ``channels`` inputs.
    """
    if narrow:
        head, channels = _narrowed(head), 1
    probe = _positive_copy(head)
    x = _probe_inputs(channels, size, random_inputs).requires_grad_(True)
    out = probe(x)
    if out.dim() != 4 or out.shape[-1] != out.shape[-2]:
        raise ValueError(f"expected a (B, N, k, k) output, got {tuple(out.shape)}")
    k = out.shape[-1]
    summed = out.sum(dim=(0, 1))  # (k, k): each sample's cell logit summed over landmarks
    windows = torch.empty(k, k, 2, 2, dtype=torch.long)
    for cy in range(k):
        for cx in range(k):
            (grad,) = torch.autograd.grad(summed[cy, cx], x, retain_graph=True)
            support = (grad != 0).any(dim=0).any(dim=0)  # (y, x): union over inputs, channels
            ys, xs = support.nonzero(as_tuple=True)
            box = torch.zeros_like(support)
            box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            if not torch.equal(box, support):
                raise ValueError(f"cell ({cy}, {cx}): the support is not a rectangle")
            windows[cy, cx] = torch.tensor([[xs.min(), xs.max()], [ys.min(), ys.max()]])
    return windows


def _conv_geometry(conv: nn.Conv2d) -> tuple[int, int, int]:
    return conv.kernel_size[0], conv.stride[0], conv.padding[0]


def _back(lo: int, hi: int, kernel: int, stride: int, padding: int, size_in: int
          ) -> tuple[int, int]:
    """Input positions [lo', hi'] read by outputs lo..hi of a (kernel, stride, padding) layer."""
    return max(0, lo * stride - padding), min(size_in - 1, hi * stride - padding + kernel - 1)


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def analytic_decimal_windows(head: nn.Module, size: int) -> torch.Tensor:
    """The same windows as ``decimal_cell_windows`` for a ``DecimalHead``, from geometry.

    Per axis, walking back from cell c: a DownBlock's output o reads its input through
    conv3x3/1(pad 1) after conv3x3/2(pad 1), i.e. 2(o-1)-1 .. 2(o+1)+1 = 2o-3 .. 2o+3, and
    through the 1x1/2 shortcut (2o, inside that); the pool's output o reads 2o .. 2o+2; the
    1x1 convs read o. Each range is clipped to the map it indexes.
    """
    blocks = list(head.trunk.blocks)
    sizes = [size, _out_size(size, POOL_KERNEL, POOL_STRIDE, 0)]
    for block in blocks:
        sizes.append(_out_size(sizes[-1], *_conv_geometry(block.conv1.conv)))
    k = sizes[-1]
    intervals = []
    for c in range(k):
        lo, hi = c, c
        for i in reversed(range(len(blocks))):  # block i maps sizes[i + 1] -> sizes[i + 2]
            block, size_in, mid = blocks[i], sizes[i + 1], sizes[i + 2]
            a = _back(*_back(lo, hi, *_conv_geometry(block.conv2.conv), mid),
                      *_conv_geometry(block.conv1.conv), size_in)
            b = _back(lo, hi, *_conv_geometry(block.shortcut.conv), size_in)
            lo, hi = min(a[0], b[0]), max(a[1], b[1])
        intervals.append(_back(lo, hi, POOL_KERNEL, POOL_STRIDE, 0, size))
    iv = torch.tensor(intervals, dtype=torch.long)  # (k, 2)
    return torch.stack((iv[None, :, :].expand(k, k, 2), iv[:, None, :].expand(k, k, 2)), dim=2)


def inside_window(windows: torch.Tensor, cell: torch.Tensor, pixel: torch.Tensor
                  ) -> torch.Tensor:
    """Whether integer ``pixel`` (..., 2) (x, y) lies in the window of ``cell`` (..., 2)
    (cx, cy) on both axes; ``windows`` as from ``decimal_cell_windows``. A cell off the
    k x k map (class k of the published round(f*k)) has no window: False."""
    k = windows.shape[0]
    valid = ((cell >= 0) & (cell < k)).all(dim=-1)
    c = cell.long().clamp(0, k - 1)
    window = windows[c[..., 1], c[..., 0]]  # (..., 2 axes, [lo, hi])
    return ((pixel >= window[..., 0]) & (pixel <= window[..., 1])).all(dim=-1) & valid
