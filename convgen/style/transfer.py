"""The style transfer engine: ``J(G) = alpha * J_content + beta * J_style + gamma * TV + delta * J_lowpass``.

The encoder is frozen and read through its named taps, so it runs only as far as the
deepest layer used, with the layers PyTorch runs slowly for a batch of one replaced by
faster equivalents (`convgen.style.frozen`). Target activations (content) and target
statistics (style Grams) are computed once, without gradients; only the generated input
``G`` is optimised.

With ``normalize_layers`` (the default) every layer's cost is divided by its value at
``G``'s activation = 0 (for the Gram cost: ``||G(S)/M||^2 / (2 n_C)^2``; for content:
``1/2 ||a(C)||^2``). Each layer then starts near 1 whatever the scale of its activations,
which is what makes random-weight encoders usable (He et al. 2016; Ustyuzhaninov et al.
2017): without it the layers with the largest activations drown the others.

``J_lowpass`` (weight ``lowpass``, 0 by default) compares ``G`` and the content after a
Gaussian blur of ``lowpass_sigma`` samples, relative to the blurred content's own
variation (Gatys et al. 2017's scale control): the content decides the layout and the
colours at scales coarser than sigma, the style everything finer.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from convgen.errors import ConfigError, DataError
from convgen.nets.tapped import TappedEncoder
from convgen.progress import bar
from convgen.style.costs import (GramCost, StatisticCost, StyleCost, content_cost, gaussian_lowpass, lowpass_cost,
                                 total_variation)
from convgen.style.frozen import frozen_layers

INITS = ("content+noise", "noise", "content")
OPTIMIZERS = ("lbfgs", "adam")
LBFGS_CHUNK = 10
BYTES_PER_ACTIVATION = 3 * 4
"""float32 activations, kept for the backward pass, plus their gradients and ReLU masks."""


def layer_weights(layers, what: str) -> dict[str, float]:
    """``[name, ...]`` (equal weights summing to 1) or ``{name: weight}``, checked."""
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, Mapping):
        weights = {str(k): float(v) for k, v in layers.items()}
    else:
        names = list(layers or [])
        weights = {name: 1.0 / len(names) for name in names} if names else {}
    bad = [f"{k}={v}" for k, v in weights.items() if not math.isfinite(v) or v < 0]
    if bad:
        raise ConfigError(f"{what} weights must be finite and >= 0, got {', '.join(bad)}")
    return weights


def activation_bytes(encoder, shape: Sequence[int], layers: Sequence[str]) -> int:
    """Estimated memory of one forward + backward pass of ``encoder`` up to the deepest of ``layers``.

    Shapes come from a copy of the encoder on PyTorch's ``meta`` device: nothing is computed
    or allocated. The estimate counts every tap up to the deepest layer, for one input of
    ``shape`` ``(C, *spatial)``, at ``BYTES_PER_ACTIVATION`` bytes per value.
    """
    order = {name: i for i, name in enumerate(encoder.tap_names)}
    deepest = max((order[name] for name in layers if name in order), default=-1)
    if deepest < 0:
        return 0
    probe = copy.deepcopy(encoder).to("meta")
    with torch.no_grad():
        outputs = probe.taps(torch.empty(1, *shape, device="meta"), encoder.tap_names[: deepest + 1])
    return BYTES_PER_ACTIVATION * (math.prod(shape) + sum(t.numel() for t in outputs.values()))


def check_memory(encoder, shape: Sequence[int], layers: Sequence[str], budget_gb: float | None) -> int:
    """Stop before starting when the activations would not fit in ``budget_gb``."""
    estimate = activation_bytes(encoder, shape, layers)
    if budget_gb is not None and estimate > budget_gb * 2**30:
        raise ConfigError(
            f"style transfer on an input of shape {tuple(shape)} needs about {estimate / 2**30:.1f} GiB of activations, "
            f"over memory_budget_gb={budget_gb:g}; reduce the input size (size=...), use shallower layers, "
            "or raise memory_budget_gb"
        )
    return estimate


def check_inputs(content: torch.Tensor | None, styles: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Content and styles as one list, after checking they agree on channels and spatial_dims."""
    inputs = ([content] if content is not None else []) + list(styles)
    if not inputs:
        raise ConfigError("style transfer needs a content input, a style input, or both")
    if len({t.shape[0] for t in inputs}) > 1 or any(t.ndim != inputs[0].ndim for t in inputs):
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise DataError(f"content and style inputs must have the same channels and spatial_dims; got shapes {shapes}")
    return inputs


@dataclass
class Result:
    """The generated input ``(C, *spatial)`` and one row of cost terms per iteration."""

    generated: torch.Tensor
    history: list[dict] = field(default_factory=list)
    start: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)


class StyleTransfer:
    """Costs of a generated input against fixed content and style targets.

    Args:
        encoder: any registered encoder; it is frozen (``eval()``, no parameter gradients).
        content_layers: tap names (equal weights summing to 1) or ``{name: weight}``.
        style_layers: the same, for style (the per-layer weights lambda).
        style_cost: a registered style cost (default `GramCost`).
        alpha: weight of the content term.
        beta: weight of the style term.
        tv: weight of the total-variation term.
        normalize_layers: divide each layer's cost by its value at zero activation (and the
            low-pass term by the blurred content's variation about its channel means).
        lowpass: weight of the low-pass content term (needs a content input; 0: none).
        lowpass_sigma: its Gaussian blur, in samples along every spatial axis (> 0).
    """

    def __init__(
        self,
        encoder: TappedEncoder,
        content_layers: Sequence[str] | Mapping[str, float] = (),
        style_layers: Sequence[str] | Mapping[str, float] = (),
        style_cost: StyleCost | None = None,
        alpha: float = 1.0,
        beta: float = 1.0,
        tv: float = 0.0,
        normalize_layers: bool = True,
        lowpass: float = 0.0,
        lowpass_sigma: float = 4.0,
    ):
        self.encoder = encoder.eval().requires_grad_(False)
        self.content_layers = layer_weights(content_layers, "content layer")
        self.style_layers = layer_weights(style_layers, "style layer")
        if not self.style_layers and not self.content_layers:
            raise ConfigError("no layers to match: set style_layers and/or content_layers")
        known = set(encoder.tap_names)
        unknown = [n for n in [*self.content_layers, *self.style_layers] if n not in known]
        if unknown:
            raise ConfigError(f"unknown layer(s) {', '.join(map(repr, unknown))}; the encoder has: {', '.join(encoder.tap_names)}")
        self.style_cost = style_cost if style_cost is not None else GramCost()
        self.alpha, self.beta, self.tv = float(alpha), float(beta), float(tv)
        self.normalize_layers = normalize_layers
        self.lowpass, self.lowpass_sigma = float(lowpass), float(lowpass_sigma)
        if not (math.isfinite(self.lowpass) and self.lowpass >= 0 and math.isfinite(self.lowpass_sigma) and self.lowpass_sigma > 0):
            raise ConfigError(f"lowpass must be >= 0 and lowpass_sigma > 0 (samples), got {lowpass!r} and {lowpass_sigma!r}")
        self.layers = list(dict.fromkeys([*self.content_layers, *self.style_layers]))
        self._frozen = frozen_layers(self.encoder)
        self._content: dict[str, torch.Tensor] = {}
        self._style: dict[str, list[tuple[float, torch.Tensor]]] = {}
        self._scale: dict[str, float] = {}

    def taps(self, x: torch.Tensor, names) -> dict[str, torch.Tensor]:
        """The encoder's activations, run the engine's way (`convgen.style.frozen`)."""
        return self.encoder.taps(x, names, self._frozen)

    @torch.no_grad()
    def set_targets(
        self,
        content: torch.Tensor | None,
        styles: Sequence[torch.Tensor],
        blend: Sequence[float] | None = None,
        statistics: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Compute the target activations and style statistics once. Inputs are ``(C, *spatial)``.

        ``statistics`` (one per style layer, from a `StatisticCost`) replace the styles: a tile
        of a large input is styled against the statistics of the whole style
        (`convgen.style.tiled`). A blank content tile then has nothing to keep (scale 1).
        """
        if self.content_layers and content is None:
            raise ConfigError("content_layers are set but there is no content input")
        if self.lowpass and content is None:
            raise ConfigError("lowpass is set but there is no content input; set lowpass=0 for texture synthesis")
        if statistics is not None:
            self._set_statistics(content, statistics)
            return
        if self.style_layers and not styles:
            raise ConfigError("style_layers are set but there is no style input")
        blend = [1.0 / len(styles)] * len(styles) if blend is None and styles else list(blend or [])
        if len(blend) != len(styles) or any(not math.isfinite(w) or w < 0 for w in blend) or (styles and sum(blend) <= 0):
            raise ConfigError(f"style_weights must be one non-negative weight per style input ({len(styles)}), got {blend}")
        self._set_content(content, blank_ok=False)
        by_statistic = isinstance(self.style_cost, StatisticCost)
        self._style = {name: [] for name in self.style_layers}
        for weight, style in zip(blend, styles):
            for name, a in self.taps(style[None], self.style_layers).items():
                target = self.style_cost.statistic(a) if by_statistic else a
                self._style[name].append((weight / sum(blend), target))
        for name, targets in self._style.items():
            if by_statistic:  # blend the statistics: one target per layer
                self._style[name] = [(1.0, sum(w * t for w, t in targets))]
            zero = torch.zeros_like(self.taps(styles[0][None], [name])[name])
            self._scale[("style", name)] = self._normaliser(self._style_cost(zero, name), name)

    def _set_content(self, content: torch.Tensor | None, blank_ok: bool) -> None:
        self._content = {}
        if self.lowpass:  # the blurred content, and its variation about each channel's mean (a flat content: 1)
            self._lowpass = gaussian_lowpass(content[None], self.lowpass_sigma)
            spread = float((self._lowpass - self._lowpass.mean(tuple(range(2, content.ndim + 1)), keepdim=True)).pow(2).sum())
            self._scale["lowpass"] = spread if self.normalize_layers and spread > 0 else 1.0
        if self.content_layers:
            for name, a in self.taps(content[None], self.content_layers).items():
                self._content[name] = a
                value = content_cost(torch.zeros_like(a), a)
                self._scale[("content", name)] = 1.0 if blank_ok and not float(value) > 0 else self._normaliser(value, name)

    def _set_statistics(self, content: torch.Tensor | None, statistics: Mapping[str, torch.Tensor]) -> None:
        if not isinstance(self.style_cost, StatisticCost):
            raise ConfigError("styling against fixed statistics needs a style cost with statistics (style_cost.name=gram)")
        missing = [name for name in self.style_layers if name not in statistics]
        if missing:
            raise ConfigError(f"no style statistic for layer(s) {', '.join(map(repr, missing))}")
        self._set_content(content, blank_ok=True)
        self._style = {name: [(1.0, statistics[name])] for name in self.style_layers}
        for name in self.style_layers:
            zero = statistics[name].new_zeros(1, statistics[name].shape[0], 1)  # a zero activation: a zero statistic
            self._scale[("style", name)] = self._normaliser(self._style_cost(zero, name), name)

    def _normaliser(self, value: torch.Tensor, layer: str) -> float:
        if not self.normalize_layers:
            return 1.0
        value = float(value)
        if not value > 0:
            raise DataError(f"layer {layer!r} gives no response to the target input (all activations zero); choose another layer")
        return value

    def _style_cost(self, activation: torch.Tensor, name: str) -> torch.Tensor:
        if isinstance(self.style_cost, StatisticCost):
            return sum(w * self.style_cost.distance(activation, t) for w, t in self._style[name])
        return sum(w * self.style_cost(activation, t) for w, t in self._style[name])

    def loss(self, generated: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The total cost of a batch of one generated input ``(1, C, *spatial)`` and its terms."""
        taps = self.taps(generated, self.layers)
        j_content = sum(
            (w * content_cost(taps[n], self._content[n]) / self._scale[("content", n)] for n, w in self.content_layers.items()),
            generated.new_zeros(()),
        )
        j_style = sum(
            (w * self._style_cost(taps[n], n) / self._scale[("style", n)] for n, w in self.style_layers.items()),
            generated.new_zeros(()),
        )
        j_tv = total_variation(generated) if self.tv else generated.new_zeros(())
        total = self.alpha * j_content + self.beta * j_style + self.tv * j_tv
        values = [total, j_content, j_style, j_tv]
        if self.lowpass:
            j_lowpass = lowpass_cost(generated, self._lowpass, self.lowpass_sigma) / self._scale["lowpass"]
            values[0] = total = total + self.lowpass * j_lowpass
            values.append(j_lowpass)
        terms = dict(zip(("loss", "content", "style", "tv", "lowpass"), (float(v.detach()) for v in values)))
        return total, terms

    def initial(self, content: torch.Tensor | None, like: torch.Tensor, init: str, noise_ratio: float, value_range, generator) -> torch.Tensor:
        """The starting point: white noise in the valid range, the content, or a blend of both."""
        if init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        if init != "noise" and content is None:
            raise ConfigError(f"init={init!r} needs a content input; use init=noise for pure texture synthesis")
        low, high = value_range
        noise = low + (high - low) * torch.rand(like.shape, generator=generator, dtype=like.dtype)
        if init == "noise":
            return noise
        if init == "content":
            return content.clone()
        if not 0 <= noise_ratio <= 1:
            raise ConfigError(f"noise_ratio must be between 0 and 1, got {noise_ratio}")
        return (1 - noise_ratio) * content + noise_ratio * noise

    def run(
        self,
        content: torch.Tensor | None,
        styles: Sequence[torch.Tensor],
        blend: Sequence[float] | None = None,
        shape: Sequence[int] | None = None,
        init: str = "content+noise",
        noise_ratio: float = 0.5,
        optimizer: str = "lbfgs",
        lr: float | None = None,
        iterations: int = 200,
        value_range: tuple[float, float] | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        snapshot_every: int = 0,
        on_snapshot: Callable[[int, torch.Tensor], None] | None = None,
        show_progress: bool = True,
        start: torch.Tensor | None = None,
        statistics: Mapping[str, torch.Tensor] | None = None,
    ) -> Result:
        """Optimise ``G`` for ``iterations`` steps and return it with the cost history.

        Inputs are ``(C, *spatial)``. ``shape`` sets G's shape when there is no content
        (texture synthesis; default: the first style's). ``value_range`` (default: the
        range spanned by content and styles) clamps G during the optimisation. With L-BFGS
        one iteration is one quasi-Newton step with a strong-Wolfe line search (one or a
        few cost evaluations); ``history`` then has one row per chunk of iterations.
        ``start`` (``(C, *spatial)``, e.g. a coarser level's result upsampled) replaces ``init``.
        ``statistics`` replace the styles' (see `set_targets`).
        """
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"iterations must be a positive integer, got {iterations!r}")
        device = torch.device(device)
        self.encoder.to(device)
        inputs = check_inputs(content, styles)
        if value_range is None:
            value_range = (min(float(t.min()) for t in inputs), max(float(t.max()) for t in inputs))
        low, high = value_range
        if not low < high:
            raise DataError(f"the inputs are constant (all values {low}); nothing to transfer")
        on = lambda t: None if t is None else t.to(device=device, dtype=torch.float32).contiguous()  # noqa: E731
        content, styles = on(content), [on(s) for s in styles]
        self.set_targets(content, styles, blend, statistics)

        like = content if content is not None else torch.empty(tuple(shape) if shape else tuple(styles[0].shape))
        generator = torch.Generator().manual_seed(seed)
        if start is None:
            start = self.initial(None if content is None else content.cpu(), like.cpu(), init, noise_ratio, value_range, generator)
        elif tuple(start.shape) != tuple(like.shape):
            raise DataError(f"the starting point has shape {tuple(start.shape)}, the result needs {tuple(like.shape)}")
        start = start.float().clamp(low, high)
        g = start.to(device)[None].requires_grad_(True)
        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS([g], lr=lr or 1.0, history_size=50, line_search_fn="strong_wolfe",
                                    tolerance_grad=0.0, tolerance_change=0.0)  # we count the iterations
        else:
            opt = torch.optim.Adam([g], lr=lr or 0.02 * (high - low))
        history: list[dict] = []
        last: dict = {}
        with torch.no_grad():
            first = self.loss(g)[1]

        def closure():
            opt.zero_grad(set_to_none=True)
            total, terms = self.loss(g)
            total.backward()
            last.update(terms)
            return total

        # L-BFGS runs in chunks of several iterations (its line search needs its curvature
        # history intact); G is clamped to the valid range between chunks, Adam every step.
        # L-BFGS keeps its history across a clamp, as the PyTorch tutorial does: restarting
        # it there cost extra evaluations and ended at a higher cost (bench_style.py).
        chunk = LBFGS_CHUNK if optimizer == "lbfgs" else 1
        done, good, restarted = 0, g.detach().clone(), False
        with bar("stylize", show=show_progress) as progress:
            task = progress.add_task("stylize", total=iterations, info="")
            while done < iterations:
                steps = min(chunk, iterations - done)
                if snapshot_every:
                    steps = min(steps, snapshot_every - done % snapshot_every)
                if optimizer == "lbfgs":
                    opt.param_groups[0].update(max_iter=steps, max_eval=steps * 5 // 4 + 5)
                opt.step(closure)
                done += steps
                with torch.no_grad():
                    g.clamp_(low, high)
                if not math.isfinite(last["loss"]) or not torch.isfinite(g).all():
                    # L-BFGS divides by its last step's curvature, which is 0 once the cost stops falling: go back
                    # to the last good point with a fresh history, once; a second failure in a row is the answer.
                    if optimizer != "lbfgs" or restarted:
                        if optimizer == "lbfgs":
                            with torch.no_grad():
                                g.copy_(good)
                            break
                        raise DataError(f"the cost became {last['loss']} at iteration {done}; lower lr or the term weights")
                    with torch.no_grad():
                        g.copy_(good)
                    opt = torch.optim.LBFGS([g], lr=lr or 1.0, history_size=50, line_search_fn="strong_wolfe",
                                            tolerance_grad=0.0, tolerance_change=0.0)  # fmt: skip
                    restarted = True
                    continue
                good.copy_(g.detach())
                restarted = False
                history.append({"iteration": done, **last})
                progress.update(task, completed=done, info=" ".join(f"{k} {v:.4g}" for k, v in last.items()))
                if snapshot_every and on_snapshot and done % snapshot_every == 0 and done < iterations:
                    on_snapshot(done, g.detach()[0].cpu())
        with torch.no_grad():
            final = self.loss(g)[1]
        return Result(g.detach()[0].cpu(), history, first, final)
