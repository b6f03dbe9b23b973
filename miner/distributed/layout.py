"""Packing the used elements of many parameters into one flat float32 buffer.

A step of once-for-all training touches only part of the supernet: the active kernel
centre, the first channels of each expand layer, the active blocks. Every peer knows from
the shared seed which sub-networks a step (or another miner) trained, hence which weight
elements they touched, so only those travel: :class:`FlatLayout` maps the union of the used
elements to consecutive positions of one flat buffer, ``[size]`` float32, in parameter
order then row-major element order. Everyone builds the same layout from the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from miner.distributed.errors import LayoutError


@dataclass(frozen=True)
class FlatLayout:
    """Where each parameter's used elements sit in the flat buffer.

    ``index[i]`` holds the flat (row-major) positions of parameter ``i``'s used elements,
    or ``None`` when all of them are used (the dense case, packed without a gather).
    """

    shapes: tuple[torch.Size, ...]
    index: tuple[torch.Tensor | None, ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def dense(cls, tensors: Sequence[torch.Tensor]) -> FlatLayout:
        """Every element of every tensor, e.g. for data-parallel training of a fixed net."""
        return cls._build([t.shape for t in tensors], [None] * len(tensors))

    @classmethod
    def from_masks(cls, masks: Sequence[torch.Tensor]) -> FlatLayout:
        """The elements where ``masks`` (bool, one per parameter, same shapes) are true."""
        index: list[torch.Tensor | None] = []
        for mask in masks:
            if mask.dtype != torch.bool:
                raise LayoutError(f"masks must be bool, got {mask.dtype}")
            flat = mask.reshape(-1)
            index.append(None if bool(flat.all()) else flat.nonzero().squeeze(1))
        return cls._build([m.shape for m in masks], index)

    @classmethod
    def _build(
        cls, shapes: Sequence[torch.Size], index: Sequence[torch.Tensor | None]
    ) -> FlatLayout:
        offsets, total = [], 0
        for shape, idx in zip(shapes, index, strict=True):
            offsets.append(total)
            total += shape.numel() if idx is None else int(idx.numel())
        return cls(tuple(torch.Size(s) for s in shapes), tuple(index), tuple(offsets), total)

    @property
    def dense_size(self) -> int:
        """Elements of all parameters, used or not."""
        return sum(s.numel() for s in self.shapes)

    def count(self, i: int) -> int:
        idx = self.index[i]
        return self.shapes[i].numel() if idx is None else int(idx.numel())

    def pack(
        self, tensors: Sequence[torch.Tensor | None], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The used elements of ``tensors`` as ``[size]`` float32; ``None`` packs zeros."""
        self._check(tensors)
        if out is None:
            out = torch.empty(self.size, dtype=torch.float32, device=_device_of(tensors))
        for i, tensor in enumerate(tensors):
            dst = out[self.offsets[i] : self.offsets[i] + self.count(i)]
            if tensor is None:
                dst.zero_()
            elif self.index[i] is None:
                dst.copy_(tensor.detach().reshape(-1))
            else:
                idx = self.index[i].to(tensor.device)  # type: ignore[union-attr]
                dst.copy_(tensor.detach().reshape(-1).index_select(0, idx))
        return out

    def unpack(self, flat: torch.Tensor, into: Sequence[torch.Tensor]) -> None:
        """Write ``flat`` back into the used elements of ``into``; other elements keep theirs."""
        if flat.numel() != self.size:
            raise LayoutError(f"flat buffer has {flat.numel()} elements, layout {self.size}")
        self._check(into)
        for i, tensor in enumerate(into):
            src = flat[self.offsets[i] : self.offsets[i] + self.count(i)].to(tensor.dtype)
            view = tensor.data.view(-1)
            if self.index[i] is None:
                view.copy_(src)
            else:
                view.index_copy_(0, self.index[i].to(tensor.device), src)  # type: ignore[union-attr]

    def restrict(self, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[size]`` bool: which of this layout's elements ``masks`` (a peer's use) covers."""
        return self.pack([m.to(torch.float32) for m in masks]) > 0.5

    def to_masks(self, flat_mask: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter bool masks from a ``[size]`` bool over the layout (false elsewhere)."""
        masks = [torch.zeros(s, dtype=torch.bool, device=flat_mask.device) for s in self.shapes]
        self.unpack(flat_mask.to(torch.float32), masks)
        return masks

    def _check(self, tensors: Sequence[torch.Tensor | None]) -> None:
        if len(tensors) != len(self.shapes):
            raise LayoutError(f"{len(tensors)} tensors for a layout of {len(self.shapes)}")
        for i, tensor in enumerate(tensors):
            if tensor is not None and tensor.shape != self.shapes[i]:
                raise LayoutError(
                    f"tensor {i} has shape {tuple(tensor.shape)}, want {tuple(self.shapes[i])}"
                )


def union_masks(mask_sets: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Elementwise OR of several per-parameter mask lists (e.g. the K sub-networks of a step)."""
    if not mask_sets:
        raise LayoutError("no masks to unite")
    out = [m.clone() for m in mask_sets[0]]
    for masks in mask_sets[1:]:
        if len(masks) != len(out):
            raise LayoutError(f"mask lists of {len(masks)} and {len(out)} parameters")
        for acc, mask in zip(out, masks, strict=True):
            acc |= mask
    return out


def _device_of(tensors: Sequence[torch.Tensor | None]) -> torch.device:
    for tensor in tensors:
        if tensor is not None:
            return tensor.device
    return torch.device("cpu")
