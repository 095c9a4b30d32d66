"""Idefics3 (SmolVLM) image processing as batched torch ops on the training device, from uint8 images.

TRL's collator runs the processor's PIL image path in the DataLoader worker: two LANCZOS resizes (stored size ->
longest edge ``size`` -> ``max_image_size`` square), then rescale + normalise to fp32 and pad, about 20 ms per row on
one core, and 3 MB of fp32 pixels per row to move. :class:`DeviceImageProcessor` takes the images as stored (uint8,
45 KB for the course's 150x100 frames) and does the same on the device:

* each resize is Pillow's own two-pass separable filter (``Resample.c``: horizontal pass, then vertical; Pillow's
  filter weights, support and bounds; 22-bit fixed-point weights, the same rounding and clipping to uint8 after each
  pass), in int32 on the device, so the result is Pillow's, not an approximation (measured: bitwise equal on the
  test images, ``tests/test_preprocess.py``);
* rescale + normalise is a 256-entry lookup table per channel made by the processor's own ``rescale`` and
  ``normalize`` on the values 0..255, so the fp32 values are the processor's.

Only the configuration :func:`~stk_vqa.training.model_utils.configure_processor` sets is supported (one image per
row, no splitting): output ``(N, 1, 3, S, S)`` with ``S = max_image_size["longest_edge"]``, no padding needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images
LANCZOS_SUPPORT = 3.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


@lru_cache(maxsize=64)
def resample_weights(in_size: int, out_size: int) -> tuple[list[int], list[list[int]]]:
    """Pillow's LANCZOS weights for one axis (``precompute_coeffs`` + ``normalize_coeffs_8bpc``).

    Returns ``(first, weights)``: per output pixel the first input pixel used and its fixed-point integer weights
    (``ksize`` each, zero beyond the pixel's window).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    firsts, weights = [], []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = sum(k)
        if total != 0.0:
            k = [w / total for w in k]
        fixed = [int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS)) for w in k]
        firsts.append(xmin)
        weights.append(fixed + [0] * (ksize - len(fixed)))
    return firsts, weights


def _resample_axis(images, out_size: int, dim: int):
    """One Pillow resampling pass of uint8-valued int32 ``images`` along ``dim`` (-1: width, -2: height)."""
    import torch

    in_size = images.shape[dim]
    firsts, weights = resample_weights(in_size, out_size)
    device = images.device
    first = torch.tensor(firsts, device=device)
    kernel = torch.tensor(weights, dtype=torch.int32, device=device)  # (out, ksize)
    acc = torch.full((), 1 << (PRECISION_BITS - 1), dtype=torch.int32, device=device)
    for tap in range(kernel.shape[1]):
        index = (first + tap).clamp(max=in_size - 1)  # weight 0 where the window ends early
        w = kernel[:, tap]
        if dim == -1:
            acc = acc + images.index_select(-1, index) * w
        else:
            acc = acc + images.index_select(-2, index) * w[:, None]
    return torch.div(acc, 1 << PRECISION_BITS, rounding_mode="floor").clamp_(0, 255)


def pil_resize(images, height: int, width: int):
    """Pillow's ``Image.resize((width, height), LANCZOS)`` of ``(..., H, W)`` uint8 images, on their device."""
    import torch

    out = images.to(torch.int32)
    if out.shape[-1] != width:  # Pillow skips a pass whose size does not change
        out = _resample_axis(out, width, -1)
    if out.shape[-2] != height:
        out = _resample_axis(out, height, -2)
    return out.to(torch.uint8)


class DeviceImageProcessor:
    """The processor's image path for uint8 ``(N, 3, H, W)`` images, as batched torch ops on their device."""

    def __init__(self, image_processor):
        from PIL import Image
        from transformers.models.idefics3 import image_processing_pil_idefics3 as idefics3

        if getattr(image_processor, "do_image_splitting", False):
            raise ValueError("device-side image processing supports do_image_splitting=False only")
        if int(getattr(image_processor, "resample", Image.LANCZOS)) != int(Image.LANCZOS):
            raise ValueError(f"device-side image processing implements LANCZOS only, not {image_processor.resample}")
        self.size = int(image_processor.size["longest_edge"])
        self.square = int(image_processor.max_image_size["longest_edge"])
        self._output_size = idefics3.get_resize_output_image_size  # the processor's own size rule
        self.lut = _value_table(image_processor)  # (3, 256) fp32
        self._luts: dict[Any, Any] = {}

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """Size after the first (longest-edge) resize, by the image processor's own rule."""
        import numpy as np

        return tuple(self._output_size(np.empty((3, height, width), dtype=np.uint8), self.size))

    def __call__(self, images) -> Any:
        """``(N, 3, H, W)`` uint8 -> ``(N, 1, 3, S, S)`` fp32 pixel values, exactly the processor's."""
        import torch

        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
        height, width = self.resized_size(images.shape[-2], images.shape[-1])
        pixels = pil_resize(pil_resize(images, height, width), self.square, self.square).long()
        lut = self._luts.get(images.device)
        if lut is None:
            lut = self._luts[images.device] = self.lut.to(images.device)
        channels = torch.arange(3, device=images.device).view(1, 3, 1, 1)
        return lut[channels, pixels].unsqueeze(1)  # lookup by (channel, value)


def _value_table(image_processor):
    """``normalize(rescale(v))`` for v = 0..255 per channel, by the image processor's own methods (fp32)."""
    import numpy as np
    import torch

    values = np.tile(np.arange(256, dtype=np.uint8)[None, None, :], (3, 1, 1))  # (3, 1, 256), channels first
    out = values
    if image_processor.do_rescale:
        out = image_processor.rescale(out, image_processor.rescale_factor)
    if image_processor.do_normalize:
        out = image_processor.normalize(out, image_processor.image_mean, image_processor.image_std)
    return torch.from_numpy(np.asarray(out, dtype=np.float32).reshape(3, 256).copy())


def stack_by_size(images: Sequence) -> list[tuple[list[int], Any]]:
    """Group ``(3, H, W)`` tensors by size: ``[(positions, stacked (n, 3, H, W)), ...]``."""
    import torch

    groups: dict[tuple[int, int], list[int]] = {}
    for position, image in enumerate(images):
        groups.setdefault(tuple(image.shape[-2:]), []).append(position)
    return [(positions, torch.stack([images[p] for p in positions])) for positions in groups.values()]
