"""The top-k input patches of chosen units, found in one streaming pass over a dataset.

For every chosen layer and unit (channel) the search keeps only the k best
``(activation, sample, position)`` seen so far, so activations are never held for more
than one batch. Ties go to the earliest sample, then the earliest position (row-major),
so results do not depend on the batch size. Each hit is then cropped from its sample
by the layer's exact receptive field (`ReceptiveField.window`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field as dataclass_field
from typing import Sequence

import torch
from torch.utils.data import DataLoader

from convgen import progress
from convgen.errors import ConfigError, DataError
from convgen.nets.receptive_field import ReceptiveField
from convgen.nets.tapped import TappedEncoder


@dataclass
class LayerTop:
    """The best hits of the chosen units of one layer; ``m = min(k, candidates)`` per unit.

    Attributes:
        layer: the tap name.
        field: its receptive field.
        units: the channels searched, in order (row ``u`` of every tensor is ``units[u]``).
        channels: how many channels the layer has.
        input_size: the spatial size of the inputs.
        activation: ``(U, m)`` the hits' activations, best first.
        sample: ``(U, m)`` the hits' sample indices in the dataset.
        position: ``(U, m, D)`` the hits' unit positions in the layer's output.
        window: ``(U, m, D, 2)`` the hits' receptive-field windows ``[start, stop)`` in input
            samples; they may run past the input's borders.
        patches: ``(U, m, C, *patch_size)`` the cropped inputs, NaN outside the input
            (filled by `attach_patches`).
        labels: ``U`` lists of ``m`` dataset labels (filled by `attach_patches`).
    """

    layer: str
    field: ReceptiveField
    units: list[int]
    channels: int
    input_size: tuple[int, ...]
    activation: torch.Tensor
    sample: torch.Tensor
    position: torch.Tensor
    window: torch.Tensor
    dtype: torch.dtype = torch.float32
    patches: torch.Tensor | None = None
    labels: list[list] = dataclass_field(default_factory=list)

    @property
    def patch_size(self) -> tuple[int, ...]:
        """The receptive field's size per axis, clipped to the input's size."""
        return tuple(min(s, n) for s, n in zip(self.field.size, self.input_size))

    def clipped(self) -> torch.Tensor:
        """``(U, m, D, 2)``: the windows clipped to the input (the part that holds data)."""
        size = torch.tensor(self.input_size).view(1, 1, -1, 1)
        return torch.minimum(self.window.clamp(min=0), size)

    def record(self, classes=None) -> dict:
        """This layer's entry of ``top_patches.json``: its field, and every unit's hits, best first
        (``classes``: the dataset's class names, to name each hit's label)."""
        clipped = self.clipped()
        units = []
        for u, unit in enumerate(self.units):
            hits = []
            for j in range(self.sample.shape[1]):
                label = self.labels[u][j]
                hit = {
                    "activation": float(self.activation[u, j]),
                    "sample": int(self.sample[u, j]),
                    "label": label if isinstance(label, (int, float, str)) or label is None else str(label),
                    "position": self.position[u, j].tolist(),
                    "window": self.window[u, j].tolist(),
                    "clipped": clipped[u, j].tolist(),
                }
                if classes is not None and isinstance(label, int) and 0 <= label < len(classes):
                    hit["class"] = classes[label]
                hits.append(hit)
            units.append({"unit": unit, "hits": hits})
        f = self.field
        return {
            "rf_size": list(f.size),
            "rf_stride": list(f.stride),
            "rf_offset": list(f.offset),
            "patch_size": list(self.patch_size),
            "channels": self.channels,
            "units": units,
        }


def receptive_fields(encoder: TappedEncoder) -> dict[str, ReceptiveField]:
    """The encoder's receptive fields, or a ConfigError: patches cannot be cropped without them."""
    try:
        return encoder.receptive_fields()
    except ValueError as exc:
        raise ConfigError(f"cannot crop patches for {type(encoder).__name__}: {exc}") from None


def default_layers(encoder: TappedEncoder) -> list[str]:
    """The deepest tap at each distinct receptive-field stride, shallow to deep.

    Taps at one stride see the input on the same grid, the deepest of them with the
    widest field and the most processing, so one per stride shows every scale once
    (VGG: ``relu1_2, relu2_2, ..., pool5``; ResNet: one tap per stage's stride).
    """
    deepest: dict[tuple[int, ...], str] = {}
    for name, f in receptive_fields(encoder).items():
        deepest.pop(f.stride, None)  # re-insert, so that dict order follows depth
        deepest[f.stride] = name
    return list(deepest.values())


def _layers(encoder: TappedEncoder, layers) -> list[str]:
    if layers is None:
        return default_layers(encoder)
    if isinstance(layers, str):
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ConfigError("no layers to visualise; give layer names or layers=null for the default")
    known = encoder.tap_names
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ConfigError(f"unknown layer(s) {', '.join(map(repr, unknown))}; {type(encoder).__name__} has: {', '.join(known)}")
    return layers


def _units(units, layer: str, channels: int) -> list[int]:
    """An int n is the first n channels (all, when the layer has fewer); a list is taken as given."""
    if isinstance(units, int) and not isinstance(units, bool):
        if units < 1:
            raise ConfigError(f"units must be a positive number of channels or a list of channel indices, got {units}")
        return list(range(min(units, channels)))
    if not isinstance(units, (list, tuple)) or not units or not all(isinstance(u, int) and not isinstance(u, bool) for u in units):
        raise ConfigError(f"units must be a positive number of channels or a list of channel indices, got {units!r}")
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise ConfigError(f"unit(s) {bad} out of range for layer {layer!r}, which has {channels} channels (units 0..{channels - 1})")
    return list(dict.fromkeys(units))


def _positive(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _best(values: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the ``k`` largest entries of each row, best first, ties to the lowest index.

    ``topk`` finds the k-th value cheaply; only the entries at or above it are sorted (stably),
    so the result is deterministic where ``topk`` alone is not.
    """
    if values.shape[1] <= k:
        return torch.sort(values, dim=1, descending=True, stable=True).indices
    floor = values.topk(k, dim=1).values[:, -1]
    rows = []
    for row, lowest in zip(values, floor):
        index = (row >= lowest).nonzero().squeeze(1)
        rows.append(index[torch.sort(row[index], descending=True, stable=True).indices[:k]])
    return torch.stack(rows)


def search(
    encoder: TappedEncoder,
    dataset,
    layers: Sequence[str] | str | None = None,
    units: int | Sequence[int] = 8,
    top_k: int = 9,
    distinct: bool = True,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> dict[str, LayerTop]:
    """The ``top_k`` strongest activations of each chosen unit of each chosen layer.

    Args:
        layers: tap names, or None for `default_layers`.
        units: the first n channels of each layer (an int), or a list of channel indices.
        distinct: at most one hit per sample (its strongest position), as in Zeiler &
            Fergus' grids; otherwise the top-k over every (sample, position) pair.
        device: where the encoder runs (it is moved there and left in eval mode).
    Returns ``{layer: LayerTop}`` in ``layers`` order, without patches (see `attach_patches`).
    """
    top_k, batch_size = _positive(top_k, "top_k"), _positive(batch_size, "batch_size")
    if len(dataset) == 0:
        raise DataError("the dataset is empty; there is nothing to search")
    layers = _layers(encoder, layers)
    fields = receptive_fields(encoder)
    device = torch.device(device)
    encoder.to(device).eval()

    first, _ = dataset[0]
    first = torch.as_tensor(first)
    input_size = tuple(first.shape[1:])
    with torch.no_grad():
        probe = encoder.taps(first[None].to(device), layers)
    channels = {name: probe[name].shape[1] for name in layers}
    chosen = {name: _units(units, name, channels[name]) for name in layers}
    index = {name: torch.tensor(chosen[name], device=device) for name in layers}

    state: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    batches = progress.iterate(loader, "visualize: searching") if show_progress else loader
    offset = 0
    with torch.no_grad():
        for x, _ in batches:
            if tuple(x.shape[2:]) != input_size:
                raise DataError(
                    f"samples differ in size: {input_size} and {tuple(x.shape[2:])}; "
                    "resize them to one size (e.g. the dataset's spatial_size)"
                )
            taps = encoder.taps(x.to(device), layers)
            n = x.shape[0]
            for name in layers:
                act = taps[name].index_select(1, index[name])
                shapes[name] = tuple(act.shape[2:])
                flat = torch.nan_to_num(act.flatten(2).transpose(0, 1), nan=float("-inf"))  # (U, B, P)
                if distinct:
                    values, positions = flat.max(dim=2)  # the first maximal position of each sample
                    samples = torch.arange(offset, offset + n, device=device).expand_as(values)
                else:  # the batch's own top-k first (flat index = sample-major, so ties stay ordered)
                    p = flat.shape[2]
                    values = flat.reshape(flat.shape[0], -1)
                    pick = _best(values, top_k)
                    values, samples, positions = values.gather(1, pick), offset + pick // p, pick % p
                if name in state:  # kept hits come first: they win ties (earlier samples)
                    kept = state[name]
                    values, samples, positions = (torch.cat([a, b], 1) for a, b in zip(kept, (values, samples, positions)))
                best = _best(values, top_k)
                state[name] = tuple(t.gather(1, best) for t in (values, samples, positions))
            offset += n

    out = {}
    for name in layers:
        values, samples, positions = (t.cpu() for t in state[name])
        position = torch.stack(torch.unravel_index(positions, shapes[name]), dim=-1)
        f = fields[name]
        window = torch.tensor([[f.window(tuple(p)) for p in row] for row in position.tolist()], dtype=torch.long)
        window = window.reshape(*position.shape, 2)
        dtype = first.dtype if first.is_floating_point() else torch.float32
        out[name] = LayerTop(name, f, chosen[name], channels[name], input_size, values, samples, position, window, dtype)
    return out


def crop(sample: torch.Tensor, field: ReceptiveField, position) -> torch.Tensor:
    """The input seen by the unit at ``position``: ``(C, *patch_size)``, NaN outside the input.

    On each axis the patch is the unit's whole window (so every patch of a layer has
    the field's size and the unit's centre in the middle), except where the field is
    wider than the input: then it is the input's extent, NaN where the window does not reach.
    """
    sample = torch.as_tensor(sample)
    if not sample.is_floating_point():
        sample = sample.float()
    window = field.window(tuple(int(p) for p in position))
    size = sample.shape[1:]
    frame = [(start, stop) if stop - start < n else (0, n) for (start, stop), n in zip(window, size)]
    patch = torch.full((sample.shape[0], *(b - a for a, b in frame)), float("nan"), dtype=sample.dtype)
    source = [slice(max(start, 0), min(stop, n)) for (start, stop), n in zip(window, size)]
    if all(s.stop > s.start for s in source):
        target = [slice(s.start - f0, s.stop - f0) for s, (f0, _) in zip(source, frame)]
        patch[(slice(None), *target)] = sample[(slice(None), *source)]
    return patch


def attach_patches(tops: dict[str, LayerTop], dataset) -> None:
    """Fill each `LayerTop`'s ``patches`` and ``labels``, reading every hit sample once."""
    wanted = defaultdict(list)
    for name, top in tops.items():
        units, m = top.sample.shape
        top.labels = [[None] * m for _ in range(units)]
        for u in range(units):
            for j in range(m):
                wanted[int(top.sample[u, j])].append((name, u, j))
    for index in sorted(wanted):
        x, label = dataset[index]
        x = torch.as_tensor(x)
        for name, u, j in wanted[index]:
            top = tops[name]
            patch = crop(x, top.field, top.position[u, j].tolist())
            if top.patches is None:
                top.patches = torch.full((*top.sample.shape, *patch.shape), float("nan"), dtype=top.dtype)
            top.patches[u, j] = patch
            top.labels[u][j] = label.item() if isinstance(label, torch.Tensor) else label
    for top in tops.values():
        if top.patches is None:  # no hits at all (cannot happen for a non-empty dataset)
            top.patches = torch.empty((*top.sample.shape, 0), dtype=top.dtype)


def top_patches(encoder: TappedEncoder, dataset, **options) -> dict[str, LayerTop]:
    """`search` then `attach_patches`: the top-k patches of each chosen unit, ready to draw."""
    tops = search(encoder, dataset, **options)
    attach_patches(tops, dataset)
    return tops
