"""Losses that learn a similarity function d(x1, x2) = ||f(x1) − f(x2)||² from labelled batches.

Every loss is a ``torch.nn.Module`` called as ``loss(embeddings (B, D), labels (B,))`` that
returns a scalar and leaves a ``stats`` dict of floats for the training loop to log. Pairs
and triplets are mined online, inside the batch, so a batch needs several samples per
identity (a P×K sampler); ArcFace instead classifies each sample among all training
identities with an angular margin. Nothing here builds a B×B×B tensor: triplet mining ranks each
negative among its anchor's sorted positives, so memory is O(B²) and time at most
O(B² log B).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from convgen.errors import ConfigError, DataError

__all__ = ["pairwise_sq_dists", "TripletLoss", "ContrastiveLoss", "PairClassifierLoss", "ArcFaceLoss", "head_path", "load_pair_head"]

MINING = ("all", "batch-hard", "semi-hard")


def pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``||x_i − y_j||²`` as an ``(N, M)`` matrix (``y`` defaults to ``x``).

    Uses ``|x|² + |y|² − 2·x·yᵀ`` (one matrix product, no ``(N, M, D)`` difference tensor),
    clamped at 0 against rounding; with ``y=None`` the diagonal is exactly 0.
    """
    sq_x = x.pow(2).sum(1)
    sq_y = sq_x if y is None else y.pow(2).sum(1)
    other = x if y is None else y
    dist = torch.addmm(sq_y[None, :], x, other.T, alpha=-2.0).add_(sq_x[:, None]).clamp_min_(0.0)
    if y is None:
        dist.diagonal().zero_()
    return dist


def check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate a batch; return ``(labels, identity index of each sample, size of each identity)``.

    Raises :class:`DataError` for a wrong shape, NaN/inf, distances that would overflow,
    or a batch without a positive pair or without a negative: a metric loss of such a
    batch is silently zero, which hides a broken sampler.
    """
    labels = torch.as_tensor(labels, device=embeddings.device)
    if embeddings.ndim != 2:
        raise DataError(f"embeddings must be a 2-D (batch, dim) tensor, got shape {tuple(embeddings.shape)}")
    if labels.ndim != 1 or len(labels) != len(embeddings):
        raise DataError(
            f"labels must be 1-D with one label per embedding: {len(embeddings)} embeddings but labels of shape {tuple(labels.shape)}"
        )
    if not torch.isfinite(embeddings).all():
        raise DataError("embeddings hold NaN or infinite values; check the encoder's inputs and the learning rate")
    if len(labels) and not torch.isfinite(4 * embeddings.detach().pow(2).sum(1).max()):
        raise DataError("embeddings are so large that their squared distances overflow; normalise them or lower the learning rate")
    _, group, sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    if not len(sizes) or sizes.max() < 2:
        raise DataError("the batch has no two samples of the same identity; use a P×K sampler with K ≥ 2")
    if len(sizes) < 2:
        raise DataError("the batch holds a single identity, so no negative; use a P×K sampler with P ≥ 2")
    return labels, group, sizes


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` B×B masks: same identity (diagonal excluded), different identity."""
    same = labels[:, None] == labels[None, :]
    neg = ~same
    same.diagonal().fill_(False)
    return same, neg


class TripletLoss(nn.Module):
    """FaceNet's triplet loss ``max(d(a,p) − d(a,n) + margin, 0)``, mined online in the batch.

    Args:
        margin: the gap α wanted between ``d(a,p)`` and ``d(a,n)`` (squared distances).
        mining: which triplets enter the loss.

            * ``"all"``: every triplet (a, p, n) of the batch; only the active ones
              (``d(a,n) < d(a,p) + margin``) have a non-zero loss.
            * ``"semi-hard"``: FaceNet's choice, triplets with
              ``d(a,p) < d(a,n) < d(a,p) + margin``: the negative is farther than the
              positive but inside the margin. Hard negatives (closer than the positive)
              are left out because early in training they pull everything onto one
              point (the collapsed solution f ≡ const).
            * ``"batch-hard"``: per anchor, its farthest positive and nearest negative
              (one triplet per anchor); anchors without a positive or a negative are
              skipped.
        reduction: ``"mean"``, the mean over triplets with a non-zero loss (0, still
            differentiable, when there are none): the average does not shrink as
            training makes most triplets easy; ``"sum"``, their plain sum (FaceNet's J).
        semi_hard_fallback: what a positive pair without a semi-hard negative does under
            ``mining="semi-hard"``. ``"none"`` (default): it contributes nothing, so the
            loss is exactly FaceNet's semi-hard set (and equals pytorch-metric-learning's
            ``TripletMarginMiner("semihard")`` + ``TripletMarginLoss``); it is the safe
            choice early in training, when a hard negative is mostly noise.
            ``"hardest"``: if that pair has a negative at least as close as its positive,
            it uses its anchor's nearest negative instead (as batch-hard does), so pairs
            whose negatives are all "too hard" still learn; pairs whose negatives are all
            beyond the margin remain at zero.

    How "all" and "semi-hard" avoid the B×B×B triplet tensor: for an anchor a, the
    positives whose window ``(d(a,p), d(a,p) + margin)`` holds a given negative n form a
    contiguous run of a's positives sorted by distance. So each anchor's positives are
    sorted once (a B × largest-identity matrix, small for a P×K batch) and every negative
    is ranked among them, which gives how many windows hold each negative and how many
    negatives each window holds. With these counts fixed the loss is linear in the
    squared distances, ``Σ_(a,p) count(a,p)·(d(a,p) + margin) − Σ_(a,n) count(a,n)·d(a,n)``,
    and so is its gradient (see :class:`LinearInSqDists`). Memory is O(B²), time
    O(B²·K) for identities of up to 17 samples and O(B² log B) beyond; loss and gradient
    are exactly those of the enumerated triplets.

    After each call ``self.stats`` holds:

    * ``loss``: the returned value;
    * ``triplets``: the number of triplets with a non-zero loss (the divisor of "mean");
    * ``active_fraction``: for "all" and "semi-hard", the fraction of all valid triplets
      of the batch whose hinge is positive (the same number for both: it describes the
      batch, not the mining); for "batch-hard", the fraction of anchors whose hardest
      triplet is active. It falls towards 0 as the embedding learns.
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "all",
        reduction: str = "mean",
        semi_hard_fallback: str = "none",
    ):
        super().__init__()
        if mining not in MINING:
            raise ConfigError(f"triplet loss: mining must be one of {', '.join(MINING)}; got {mining!r}")
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"triplet loss: reduction must be 'mean' or 'sum'; got {reduction!r}")
        if semi_hard_fallback not in ("none", "hardest"):
            raise ConfigError(f"triplet loss: semi_hard_fallback must be 'none' or 'hardest'; got {semi_hard_fallback!r}")
        if not margin >= 0:
            raise ConfigError(f"triplet loss: margin must be ≥ 0; got {margin!r}")
        self.margin = float(margin)
        self.mining = mining
        self.reduction = reduction
        self.semi_hard_fallback = semi_hard_fallback
        self.stats: dict[str, float] = {}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, reduction={self.reduction!r}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels, group, sizes = check_batch(embeddings, labels)
        if self.mining == "batch-hard":
            loss, triplets, active_fraction = self._batch_hard(embeddings, group, sizes)
        else:
            loss, triplets, active_fraction = self._windows(embeddings, labels, group, sizes)
        self.stats = {"loss": float(loss.detach()), "triplets": float(triplets), "active_fraction": active_fraction}
        return loss

    def _batch_hard(self, embeddings: torch.Tensor, group: torch.Tensor, sizes: torch.Tensor):
        """Hardest positive and negative per anchor: ``(loss, active count, active fraction)``.

        The B×B matrix only selects the pair indices (no gradient); the two chosen
        distances per anchor are recomputed directly, so backward costs O(B·D).
        """
        identity_size = sizes[group]
        valid = (identity_size >= 2) & (identity_size < len(group))
        with torch.no_grad():
            dist = pairwise_sq_dists(embeddings.detach())
            members = identity_members(group, sizes)
            _, columns = sorted_positives(dist, members)
            farthest = (identity_size - 2).clamp_min(0)[:, None]  # the last of the anchor's sorted positives
            hardest_pos = columns.gather(1, farthest)[valid, 0]
            hardest_neg = mark_beyond(dist, members).argmin(1)[valid]
        anchors = embeddings[valid]
        d_ap = (anchors - embeddings[hardest_pos]).pow(2).sum(1)
        d_an = (anchors - embeddings[hardest_neg]).pow(2).sum(1)
        hinge = F.relu(d_ap - d_an + self.margin)
        active = (hinge > 0).sum()
        loss = hinge.sum() / active.clamp_min(1) if self.reduction == "mean" else hinge.sum()
        return loss, active, float(active) / max(int(valid.sum()), 1)

    def _windows(self, embeddings: torch.Tensor, labels: torch.Tensor, group: torch.Tensor, sizes: torch.Tensor):
        """"all" and "semi-hard" without enumerating triplets: ``(loss, triplets, active fraction)``.

        With a's positives sorted by distance, ``k_lo[a, n]`` = #p with ``d(a,p) < d(a,n)``
        and ``k_hi[a, n]`` = #p with ``d(a,p) + margin ≤ d(a,n)``: the windows that hold n
        are the sorted positions ``[k_hi, k_lo)`` ("all": ``[k_hi, #positives)``). Per
        sorted positive j, ``hi[a, j]`` = #n with ``d(a,n) < d(a,p_j) + margin`` and
        ``lo[a, j]`` = #n with ``d(a,n) ≤ d(a,p_j)``: its window holds ``hi − lo`` negatives.
        """
        with torch.no_grad():
            x = embeddings.detach()
            dist = pairwise_sq_dists(x)
            n_pos = sizes[group] - 1
            members = identity_members(group, sizes)
            sorted_pos, columns = sorted_positives(dist, members)  # (B, W): +inf padded, and their columns
            in_row = torch.isfinite(sorted_pos)
            # From here on, non-negatives (same identity, diagonal) lie "beyond" everything:
            # ranked past every finite threshold, they fall in no window and need no mask.
            dneg = mark_beyond(dist, members)
            k_hi, hi = rank_among(sorted_pos + self.margin, dneg, inclusive=True)
            if self.mining == "all":
                k_lo, lo = n_pos[:, None].to(k_hi.dtype), torch.zeros_like(hi)
            else:
                k_lo, lo = rank_among(sorted_pos, dneg, inclusive=False)
            per_negative = (k_lo - k_hi).clamp_min_(0).to(x.dtype)  # windows holding (a, n)
            per_positive = (hi - lo).clamp_min_(0).mul_(in_row)  # negatives in (a, p_j)'s window
            shifted = torch.where(in_row, sorted_pos + self.margin, 0.0).double()
            total = (per_positive.double() * shifted).sum() - row_dots(per_negative, dneg).double().sum()
            triplets = per_positive.sum(dtype=torch.float64)
            coef = per_negative.neg_()  # ∂loss/∂d(a,b), built in place
            rows = torch.arange(len(x), device=x.device)[:, None].expand_as(columns)
            coef.index_put_((rows[in_row], columns[in_row]), per_positive[in_row], accumulate=True)
            if self.mining == "semi-hard" and self.semi_hard_fallback == "hardest":
                fallback = in_row & (hi <= lo) & (lo > 0)
                nearest = dneg.argmin(1, keepdim=True).expand_as(columns)
                total = total + (shifted - dneg.gather(1, nearest).double())[fallback].sum()
                triplets = triplets + fallback.sum()
                coef.index_put_((rows[fallback], columns[fallback]), coef.new_ones(()), accumulate=True)
                coef.index_put_((rows[fallback], nearest[fallback]), -coef.new_ones(()), accumulate=True)
            if self.reduction == "mean":
                scale = 1.0 / max(float(triplets), 1.0)
                total, coef = total * scale, coef.mul_(scale)
            active = float((hi * in_row).sum()) / float((n_pos * (len(labels) - n_pos - 1)).sum())
        return LinearInSqDists.apply(embeddings, coef, total.to(embeddings.dtype)), triplets, active


LOOP_WIDTH = 16  # up to this many thresholds per row, comparing beats torch.searchsorted


class LinearInSqDists(torch.autograd.Function):
    """A loss that, for its mined pairs and triplets held fixed, is ``Σ_ab C[a,b]·d(a,b) + const``.

    ``forward(x, C, value)`` returns the precomputed ``value``; ``backward`` applies
    ``∂/∂x_a = 2·Σ_b (C[a,b] + C[b,a])·(x_a − x_b)``: two matrix products, and no autograd
    graph through the B×B mining at all. This is the gradient that autograd would give
    through the hinges (a hinge exactly at zero has zero slope, as in ``relu``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, coef: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, coef)
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, coef = ctx.saved_tensors
        weight = coef.sum(0) + coef.sum(1)
        grad_x = torch.addmm(weight[:, None] * x, coef, x, alpha=-1.0).addmm_(coef.T, x, alpha=-1.0)
        return grad_x.mul_(2 * grad), None, None


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Σ_n a[i, n]·b[i, n]`` per row, without a B×B temporary."""
    return torch.bmm(a[:, None, :], b[:, :, None]).view(-1)


def identity_members(group: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``(B, largest identity)`` indices of the samples of each sample's identity (itself
    included), padded with -1: the same-identity pairs, without a B×B mask."""
    order = torch.argsort(group, stable=True)
    starts = sizes.cumsum(0) - sizes
    rank = torch.arange(len(group), device=group.device) - starts[group[order]]
    members = torch.full((len(sizes), int(sizes.max())), -1, dtype=torch.long, device=group.device)
    members[group[order], rank] = order
    return members[group]


def sorted_positives(dist: torch.Tensor, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each anchor's distances to its positives, ascending, in a (B, largest identity − 1)
    matrix padded with +inf, and the column (the positive) of each entry."""
    anchors = torch.arange(len(members), device=members.device)[:, None]
    self_or_pad = (members < 0) | (members == anchors)
    columns = members.clamp_min(0)
    values, idx = dist.gather(1, columns).masked_fill(self_or_pad, float("inf")).sort(dim=1)
    # Every row has one +inf (the anchor itself): drop the last column.
    return values[:, :-1], columns.gather(1, idx)[:, :-1]


def mark_beyond(dist: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """``dist`` (modified in place) with every same-identity entry set to the largest finite
    value of its dtype: past every real distance (``check_batch`` rules out overflow), yet
    ``0 × it`` is still 0."""
    rows = torch.arange(len(members), device=members.device)[:, None].expand_as(members)
    valid = members >= 0
    return dist.index_put_((rows[valid], members[valid]), dist.new_tensor(torch.finfo(dist.dtype).max))


def rank_among(thresholds: torch.Tensor, values: torch.Tensor, inclusive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank each value among its row's sorted thresholds, and count the values below each.

    Returns ``rank[a, n]`` = #j with ``thresholds[a, j] ≤ values[a, n]`` (``<`` when not
    inclusive), a small signed integer (B, N) tensor, and ``below[a, j]`` = #n with
    ``rank[a, n] ≤ j``, i.e. ``values[a, n] < thresholds[a, j]`` (``≤``), float (B, W).
    """
    width = thresholds.shape[1]
    if width > LOOP_WIDTH:
        rank = torch.searchsorted(thresholds.contiguous(), values.contiguous(), right=inclusive, out_int32=True)
        hist = torch.zeros(len(rank), width + 1, dtype=values.dtype, device=values.device)
        hist.scatter_add_(1, rank.long(), torch.ones_like(values))
        return rank, hist.cumsum(1)[:, :width]
    compare = torch.ge if inclusive else torch.gt
    rank = torch.zeros(values.shape, dtype=torch.int8, device=values.device)
    not_below = torch.empty(thresholds.shape, dtype=values.dtype, device=values.device)
    for j in range(width):
        beyond = compare(values, thresholds[:, j : j + 1])
        rank += beyond.view(torch.int8)  # same dtype: no conversion pass
        not_below[:, j] = beyond.view(torch.uint8).sum(1, dtype=torch.int32)
    return rank, values.shape[1] - not_below


class ContrastiveLoss(nn.Module):
    """Hadsell-style contrastive loss on squared distances, balanced between pair kinds.

    ``L = mean_{same pairs} relu(d − pos_margin) + mean_{different pairs} relu(neg_margin − d)``

    Each kind is averaged over *all* its pairs of the batch (zeros included), then the
    two means are added. Averaging the kinds separately matters: a P×K batch has about
    B·K positive pairs but B² negative pairs, so a single mean over all pairs would all
    but ignore the positives. ``pos_margin > 0`` lets same-identity pairs sit anywhere
    within that radius at no cost.

    After each call ``self.stats`` holds ``loss``, ``pos_loss``, ``neg_loss`` and
    ``active_fraction`` (the fraction of pairs whose term is non-zero).
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 0.5):
        super().__init__()
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.stats: dict[str, float] = {}

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels, _, _ = check_batch(embeddings, labels)
        pos, neg = pair_masks(labels)
        dist = pairwise_sq_dists(embeddings)
        pos_terms = F.relu(dist[pos] - self.pos_margin)
        neg_terms = F.relu(self.neg_margin - dist[neg])
        pos_loss, neg_loss = pos_terms.mean(), neg_terms.mean()
        loss = pos_loss + neg_loss
        active = int((pos_terms > 0).sum()) + int((neg_terms > 0).sum())
        self.stats = {
            "loss": float(loss.detach()),
            "pos_loss": float(pos_loss.detach()),
            "neg_loss": float(neg_loss.detach()),
            "active_fraction": active / (pos_terms.numel() + neg_terms.numel()),
        }
        return loss


class PairClassifierLoss(nn.Module):
    """Verification as binary classification: ``ŷ = σ(Σ_k w_k·φ_k(f_i, f_j) + b)``.

    The head (``self.head``, an ``nn.Linear(embedding_dim, 1)``) is a parameter of this
    module, so an optimiser over the encoder's and the loss's parameters trains both.

    Args:
        embedding_dim: the length of the embeddings.
        distance: the per-coordinate feature φ_k.

            * ``"abs"``: ``|f_i,k − f_j,k|``.
            * ``"chi2"``: ``(f_i,k − f_j,k)² / (|f_i,k| + |f_j,k| + eps)``. The classic χ²
              divides by ``f_i,k + f_j,k``, which assumes non-negative features
              (histograms); embeddings may be negative, so that denominator can vanish or
              change sign. With absolute values it equals the classic form for
              non-negative features, and it is bounded by ``|f_i,k| + |f_j,k|`` (since
              ``|a − b| ≤ |a| + |b|``), so it stays finite for zeros and signs.
        seed: seeds the choice of negative pairs (see below).
        eps: the χ² denominator's floor.

    Pairs, per call: every same-identity pair ``i < j`` of the batch, and as many
    different-identity pairs drawn uniformly without replacement (if the batch has fewer
    negative pairs, all of them and as many positive pairs). The draw uses a
    ``torch.Generator`` seeded with ``seed`` and the call number, so a run is
    reproducible. Uniform rather than hardest negatives: the head learns a probability,
    and training it on a balanced, unbiased sample of pairs keeps ``score`` meaningful as
    "probability same" at a 1:1 prior. The loss is binary cross-entropy with logits,
    averaged over the pairs.

    After each call ``self.stats`` holds ``loss``, ``pair_accuracy`` (the fraction of the
    pairs classified right at probability 0.5) and ``pairs``.
    """

    def __init__(self, embedding_dim: int = 128, distance: str = "abs", seed: int = 0, eps: float = 1e-6):
        super().__init__()
        if distance not in ("abs", "chi2"):
            raise ConfigError(f"pair classifier: distance must be 'abs' or 'chi2'; got {distance!r}")
        self.distance = distance
        self.seed = int(seed)
        self.eps = float(eps)
        self.head = nn.Linear(embedding_dim, 1)
        # A buffer, not an int: it is saved in checkpoints, so a resumed run draws the same pairs.
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.stats: dict[str, float] = {}

    def features(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """φ(e1, e2), coordinate by coordinate (same shape as the broadcast inputs)."""
        diff = e1 - e2
        if self.distance == "abs":
            return diff.abs()
        return diff.pow(2) / (e1.abs() + e2.abs() + self.eps)

    def logits(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """The head's logit of "same" for each pair of rows."""
        if e1.shape[-1] != self.head.in_features or e2.shape[-1] != self.head.in_features:
            raise ConfigError(
                f"pair classifier: embedding_dim is {self.head.in_features} but the embeddings have "
                f"{e1.shape[-1]} values; set the loss's embedding_dim to the encoder's"
            )
        return self.head(self.features(e1, e2)).squeeze(-1)

    def score(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Probability that ``e1`` and ``e2`` (``(D,)`` or ``(N, D)``, broadcast) are the same identity."""
        if not (torch.isfinite(e1).all() and torch.isfinite(e2).all()):
            raise DataError("embeddings hold NaN or infinite values; check the encoder's inputs")
        return torch.sigmoid(self.logits(e1, e2))

    def balanced_pairs(self, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pairs (N, 2), targets (N,))``: equally many same (1) and different (0) pairs ``i < j``."""
        upper = torch.ones_like(pos).triu(1)
        pos_pairs, neg_pairs = (pos & upper).nonzero(), (neg & upper).nonzero()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.calls))
        n = min(len(pos_pairs), len(neg_pairs))
        pos_pairs = pos_pairs[torch.randperm(len(pos_pairs), generator=generator)[:n].to(pos.device)]
        neg_pairs = neg_pairs[torch.randperm(len(neg_pairs), generator=generator)[:n].to(pos.device)]
        targets = torch.cat([torch.ones(n), torch.zeros(n)]).to(pos.device)
        return torch.cat([pos_pairs, neg_pairs]), targets

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels, _, _ = check_batch(embeddings, labels)
        pairs, targets = self.balanced_pairs(*pair_masks(labels))
        self.calls += 1
        logits = self.logits(embeddings[pairs[:, 0]], embeddings[pairs[:, 1]])
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
        accuracy = ((logits > 0) == (targets > 0.5)).float().mean()
        self.stats = {"loss": float(loss.detach()), "pair_accuracy": float(accuracy), "pairs": float(len(pairs))}
        return loss

    def save_head(self, weights, encoder_fingerprint: str) -> Path:
        """Write the head beside the encoder's weights file (see `head_path`), bound to that encoder. Atomic."""
        from safetensors.torch import save_file

        from convgen.io import atomic_path

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        metadata = {"format": HEAD_FORMAT, "distance": self.distance, "eps": repr(self.eps), "encoder_fingerprint": encoder_fingerprint}
        with atomic_path(head_path(weights)) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return head_path(weights)


class ArcFaceLoss(nn.Module):
    """ArcFace's additive angular margin softmax (Deng et al. 2019) over the training identities.

    Each training identity ``c`` has a learned unit vector ``w_c`` (a parameter of this
    module, trained with the encoder, dropped afterwards: only the encoder is saved). With
    ``θ_c`` the angle between a normalised embedding and ``w_c``, the loss is the cross
    entropy of the logits ``s·cos(θ_y + m)`` for the sample's own identity ``y`` and
    ``s·cos θ_c`` for every other. Where the triplet loss compares the few identities of a
    batch, every step here pushes a sample away from *all* training identities at once,
    which is why classification with a margin is the usual way to train speaker and face
    embeddings from a few dozen people. At test time nothing of the classes remains: people
    are compared by the distance between embeddings, as with every other loss.

    Args:
        classes: how many identities the labels count (``0 ≤ label < classes``); the
            ``train`` recipe fills it from the dataset.
        embedding_dim: the length of the embeddings; filled from the encoder.
        margin: the angle ``m`` in radians added to the target's angle (0.2 ≈ 11°, the
            speaker-verification default; face recognition on thousands of people uses 0.5).
        scale: ``s``, the inverse temperature of the softmax over unit-length cosines.

    Where ``θ_y + m`` would pass π, ``cos(θ_y + m)`` would turn back up; there the target's
    logit is ``s·(cos θ_y − m·sin m)`` instead (as in ArcFace's code), so the loss keeps
    falling as ``θ_y`` shrinks. After each call ``self.stats`` holds ``loss`` and
    ``accuracy`` (the fraction of the batch whose nearest class vector is its own, without
    the margin).
    """

    def __init__(self, classes: int | None = None, embedding_dim: int | None = None, margin: float = 0.2, scale: float = 30.0):
        super().__init__()
        if classes is None or embedding_dim is None:
            raise ConfigError("arcface loss: classes and embedding_dim are needed; the train recipe fills them from the dataset and encoder")
        if int(classes) < 2:
            raise ConfigError(f"arcface loss: classes must be at least 2, got {classes!r}")
        if not 0 <= margin < math.pi / 2:
            raise ConfigError(f"arcface loss: margin is an angle in radians in [0, π/2), got {margin!r}")
        if not scale > 0:
            raise ConfigError(f"arcface loss: scale must be > 0, got {scale!r}")
        self.margin, self.scale = float(margin), float(scale)
        self.weight = nn.Parameter(torch.empty(int(classes), int(embedding_dim)))
        nn.init.xavier_uniform_(self.weight)
        self.stats: dict[str, float] = {}

    def extra_repr(self) -> str:
        return f"classes={self.weight.shape[0]}, embedding_dim={self.weight.shape[1]}, margin={self.margin}, scale={self.scale}"

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``s·cos θ_c`` for every class, with the margin on each sample's own class: ``(B, classes)``."""
        cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1)).clamp(-1.0, 1.0)
        target = cosine.gather(1, labels[:, None])
        sine = (1.0 - target.pow(2)).clamp_min(1e-12).sqrt()
        with_margin = target * math.cos(self.margin) - sine * math.sin(self.margin)  # cos(θ + m)
        past_pi = target < math.cos(math.pi - self.margin)  # θ + m > π
        with_margin = torch.where(past_pi, target - self.margin * math.sin(self.margin), with_margin)
        return self.scale * cosine.scatter(1, labels[:, None], with_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels, _, _ = check_batch(embeddings, labels)
        if embeddings.shape[1] != self.weight.shape[1]:
            raise ConfigError(
                f"arcface loss: embedding_dim is {self.weight.shape[1]} but the embeddings have {embeddings.shape[1]} values; "
                "leave loss.embedding_dim unset so the train recipe fills it from the encoder"
            )
        labels = labels.long()
        if labels.min() < 0 or labels.max() >= self.weight.shape[0]:
            raise DataError(
                f"arcface loss: a label is {int(labels.max()) if labels.max() >= 0 else int(labels.min())} but there are "
                f"{self.weight.shape[0]} classes; leave loss.classes unset so the train recipe counts the dataset's identities"
            )
        logits = self.logits(embeddings, labels)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1)).argmax(1) == labels).float().mean()
        self.stats = {"loss": float(loss.detach()), "accuracy": float(accuracy)}
        return loss


HEAD_FORMAT = "convgen.pair-head/1"


def head_path(weights) -> Path:
    """Where the trained pair head of a weights file lives: ``encoder.safetensors`` → ``encoder.head.safetensors``."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".head.safetensors")


def load_pair_head(weights, encoder_fingerprint: str) -> PairClassifierLoss | None:
    """The pair head trained with the encoder of ``weights``, or None when there is none.

    A head file whose recorded encoder fingerprint differs from ``encoder_fingerprint``
    belongs to other weights (say, an older run in the same folder) and is ignored.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from convgen.weights import check_safetensors

    path = head_path(weights)
    if not path.is_file():
        return None
    check_safetensors(path, "pair-head file")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != HEAD_FORMAT:
        raise DataError(f"{path} is not a convgen pair-head file; remove it or re-train")
    if metadata.get("encoder_fingerprint") != encoder_fingerprint:
        return None
    state = load_file(str(path))
    if set(state) != {"weight", "bias"} or state["weight"].ndim != 2 or state["weight"].shape[0] != 1:
        raise DataError(f"{path} does not hold a pair head (weight (1, D), bias (1,)); re-train")
    try:
        head = PairClassifierLoss(state["weight"].shape[1], metadata.get("distance", "abs"), eps=float(metadata.get("eps", "1e-6")))
    except (ConfigError, ValueError):
        raise DataError(f"{path} has a damaged header; re-train") from None
    head.head.load_state_dict(state)
    return head.eval()
