"""How good is a learned similarity function? Verification, identification and one-shot metrics.

Conventions, used by every function here:

* A *score* is a **distance**: smaller means more similar. convgen's distance is the squared
  Euclidean distance between L2-normalised embeddings, so it lies in ``[0, 4]``.
* Verification functions take ``distances`` (one per pair) and ``same`` (``True`` when the
  pair shows the same identity) and predict "same" when ``d <= tau``.
* FAR (false accept rate) = accepted different pairs / all different pairs;
  TAR (true accept rate) = accepted same pairs / all same pairs; FRR = 1 - TAR.
* Identification functions take a *gallery* (the enrolled database) and *probes* (the
  searches). A gallery identity's distance to a probe is the distance to its **closest**
  gallery sample.

Inputs may be numpy arrays, torch tensors or lists. Anything unusable (mismatched lengths,
NaN, a missing class of pairs) raises a one-line `convgen.errors.DataError` that
says how to fix it. Everything is pure numpy: no plotting, no files (see
`convgen.metric.plots` for figures).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import numpy as np

from convgen.errors import DataError

# Rows of probes (or pairs) handled at once, so memory stays ~ CHUNK x gallery, not N x N x D.
_CHUNK = 4096
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- validation


def _as_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as error:  # ragged lists and the like
        raise DataError(f"{name} is not an array ({error}); pass a numpy array or a torch tensor") from None


def _check_pairs(distances, same) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(distances float64 (M,), same bool (M,))`` with both kinds of pair present."""
    d = _as_numpy(distances, "distances")
    s = _as_numpy(same, "same")
    if d.ndim != 1 or s.ndim != 1:
        raise DataError(
            f"distances and same must be 1-D (one value per pair), got shapes {d.shape} and {s.shape}; flatten them"
        )
    if len(d) != len(s):
        raise DataError(
            f"distances has {len(d)} pairs but same has {len(s)}; pass one same/different flag per distance"
        )
    if not np.issubdtype(d.dtype, np.number) or np.issubdtype(d.dtype, np.complexfloating):
        raise DataError(f"distances must be real numbers, got dtype {d.dtype}")
    d = d.astype(np.float64)
    if not np.isfinite(d).all():
        bad = int((~np.isfinite(d)).sum())
        raise DataError(f"{bad} of {len(d)} distances are NaN or infinite; drop those pairs or fix the embeddings")
    if s.dtype != np.bool_:
        if not np.issubdtype(s.dtype, np.number) or not np.isin(s, (0, 1)).all():
            raise DataError(f"same must be booleans (or 0/1), got dtype {s.dtype}; pass same = (label_a == label_b)")
        s = s.astype(bool)
    n_same = int(s.sum())
    if n_same == 0:
        raise DataError(
            f"none of the {len(s)} pairs is a same-identity pair; include pairs of two samples of one identity "
            "(identities need at least 2 samples)"
        )
    if n_same == len(s):
        raise DataError(
            f"all {len(s)} pairs are same-identity pairs; include pairs of different identities (need at least 2 identities)"
        )
    return d, s


def _check_embeddings(emb, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(embeddings float64 (N, D), labels (N,))``."""
    e = _as_numpy(emb, f"{name} embeddings")
    y = _as_numpy(labels, f"{name} labels")
    if e.ndim != 2:
        raise DataError(
            f"{name} embeddings must be 2-D (samples, embedding_dim), got shape {e.shape}; stack one row per sample"
        )
    if y.ndim != 1:
        raise DataError(f"{name} labels must be 1-D (one identity per sample), got shape {y.shape}")
    if len(e) != len(y):
        raise DataError(f"{name} has {len(e)} embeddings but {len(y)} labels; pass one label per embedding")
    if len(e) == 0:
        raise DataError(f"{name} is empty; it needs at least one embedding")
    if not np.issubdtype(e.dtype, np.number) or np.issubdtype(e.dtype, np.complexfloating):
        raise DataError(f"{name} embeddings must be real numbers, got dtype {e.dtype}")
    e = e.astype(np.float64)
    if not np.isfinite(e).all():
        rows = int((~np.isfinite(e)).any(axis=1).sum())
        raise DataError(f"{rows} of {len(e)} {name} embeddings hold NaN or infinite values; re-embed or drop those samples")
    return e, y


def _check_targets(targets, name: str) -> list[float]:
    out = []
    for t in np.atleast_1d(np.asarray(targets, dtype=float)).tolist():
        if not (0.0 < t <= 1.0):
            raise DataError(f"{name} must lie in (0, 1], got {t}; e.g. {name}=(0.1, 0.01)")
        out.append(float(t))
    return out


def _resolvable(available: int, target: float) -> bool:
    """A rate ``target`` is only measurable with at least ``1/target`` negatives (one error = target)."""
    return available * target >= 1.0 - 1e-9


# --------------------------------------------------------------------------- how sure is a rate?

#: Below this many distinct people, error rates measured on them get a warning: the
#: searches of one person are alike, so a look-alike stranger moves the rate by a whole
#: person's share, and an interval that treats searches as independent is too narrow.
MIN_PEOPLE = 10


def clopper_pearson(errors: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) ``confidence`` interval of a rate seen as ``errors`` of ``trials``.

    The bounds are Beta quantiles: ``lower = B(α/2; k, n − k + 1)`` (0 when k = 0),
    ``upper = B(1 − α/2; k + 1, n − k)`` (1 when k = n), α = 1 − confidence. It never
    undercovers, which is what a threshold promise needs; with 0 errors in n trials the
    upper bound is ``1 − (α/2)^(1/n)`` (≈ 3.7/n at 95%), not 0.
    """
    from scipy.stats import beta

    k, n = float(errors), float(trials)  # fractional counts: effective sample sizes (see `design_effect`)
    if n <= 0 or not 0 <= k <= n:
        raise DataError(f"a rate needs 0 <= errors <= trials and trials > 0, got {k:g} of {n:g}")
    alpha = 1.0 - float(confidence)
    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


@functools.lru_cache(maxsize=64)
def min_trials(target: float, factor: float = 2.0, confidence: float = 0.95) -> int:
    """The fewest trials that bound a rate calibrated at ``target`` below ``factor × target``.

    A threshold calibrated at rate ``target`` on n trials lets through ``floor(target·n)``
    of them; the Clopper–Pearson upper bound of that rate falls below ``factor × target``
    only when enough errors are observed. The smallest n from which this holds for every
    larger n is about ``7.2 / target`` at 95% and factor 2 (FPIR 1%: 718 searches;
    0.1%: 7,208), because 7 errors are needed before the upper bound of k/n drops under
    2k/n. Computed exactly here (a search over n up to ``40 / target``).
    """
    from scipy.stats import beta

    target = float(target)
    if not 0 < target < 1:
        raise DataError(f"the target rate must lie in (0, 1), got {target}")
    n = np.arange(1, int(math.ceil(40 / target)) + 1)
    k = np.floor(target * n + 1e-9)
    upper = np.where(k >= n, 1.0, beta.ppf(1 - (1 - confidence) / 2, k + 1, np.maximum(n - k, 1)))
    bad = np.flatnonzero(upper >= factor * target)
    return int(n[bad[-1]] + 1) if len(bad) else 1


def design_effect(scores, groups) -> float:
    """Kish's design effect ``1 + (m̃ − 1)·ρ`` of trials that come in groups (searches by person).

    The searches of one person are alike (one look-alike stranger fails on most of their
    samples), so n searches by few people carry less information than n independent ones:
    about ``n / design_effect``. ``ρ`` is the intra-person correlation of the continuous
    ``scores`` (one-way ANOVA estimator, clipped to [0, 1]); ``m̃ = Σ m_i² / n`` the
    size-weighted mean group size. The correlation of the thresholded outcome (false
    positive or not) is lower than that of the scores, so this errs on the safe side.
    """
    x = np.asarray(scores, dtype=np.float64)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    g = g.reshape(-1)
    n, k = len(x), int(g.max()) + 1 if len(g) else 0
    if k < 2 or n <= k:
        return float(max(n, 1)) if k < 2 else 1.0  # one person: all searches are one observation
    sizes = np.bincount(g, minlength=k).astype(np.float64)
    means = np.bincount(g, weights=x, minlength=k) / sizes
    between = (sizes * (means - x.mean()) ** 2).sum() / (k - 1)
    within = ((x - means[g]) ** 2).sum() / (n - k)
    m0 = (n - (sizes**2).sum() / n) / (k - 1)
    rho = 0.0 if between + (m0 - 1) * within <= 0 else (between - within) / (between + (m0 - 1) * within)
    rho = min(max(rho, 0.0), 1.0)
    return float(1.0 + ((sizes**2).sum() / n - 1.0) * rho)


def rate_estimate(errors: int, trials: int, people: int | None, target: float, what: str = "FPIR", deff: float = 1.0) -> dict:
    """A measured rate with its 95% interval, the people behind it, and a warning when too thin.

    ``deff`` (see `design_effect`) shrinks the trials to the ``effective_trials`` they
    are worth when they come from few people; the Clopper–Pearson interval is computed
    on those. Returns ``{"ci95": [lower, upper], "trials", "effective_trials", "people",
    "warning"}``; ``warning`` is one line (or ``None``) when the effective trials cannot
    bound the rate below twice the target (see `min_trials`) or come from fewer than
    `MIN_PEOPLE` people.
    """
    deff = max(float(deff), 1.0)
    effective = trials / deff
    lower, upper = clopper_pearson(errors / deff, effective)
    problems = []
    needed = min_trials(target) if target < 1 else 1
    if effective < needed:
        worth = f" worth {effective:.0f} independent ones" if deff > 1.0 else ""
        problems.append(f"{trials} trials{worth} (need {needed} for an upper bound below {2 * target:g})")
    if people is not None and people < MIN_PEOPLE:
        problems.append(f"{people} people (need at least {MIN_PEOPLE})")
    warning = None
    if problems:
        warning = (f"{what} {target:g} rests on only {' and '.join(problems)}: the true rate may be up to "
                   f"{upper:.3g}; measure on more people")  # fmt: skip
    return {"ci95": [lower, upper], "trials": int(trials), "effective_trials": float(effective),
            "people": None if people is None else int(people), "warning": warning}  # fmt: skip


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))``, clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


# --------------------------------------------------------------------------- verification (1:1)


def roc(distances, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC curve of a distance: ``(far, tar, thresholds)``, one point per distinct distance.

    Point ``i`` is the operating point "accept when ``d <= thresholds[i]``". Tied distances
    are accepted together, so a tie between a same and a different pair is one diagonal
    step, never an optimistic corner. The curve starts at ``(0, 0)`` with threshold ``-inf``
    (accept nothing) and ends at ``(1, 1)`` with the largest distance (accept everything).
    FAR is measured over different pairs, TAR over same pairs. Read it as: how many
    impostors must be let in (FAR) to accept a given share of genuine users (TAR).
    """
    return _roc(*_check_pairs(distances, same))


def _roc(d: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    # Last index of each group of equal distances: the point after the whole tie is accepted.
    last = np.flatnonzero(np.r_[d[1:] != d[:-1], True])
    accepted_same = np.cumsum(s)[last]
    accepted_diff = (last + 1) - accepted_same
    tar = np.r_[0.0, accepted_same / s.sum()]
    far = np.r_[0.0, accepted_diff / (~s).sum()]
    thresholds = np.r_[-np.inf, d[last]]
    return far, tar, thresholds


def auc(far, tar) -> float:
    """Area under the ROC curve (trapezoid rule): the probability that a random same pair is
    closer than a random different pair (ties count one half). 1 is perfect, 0.5 is chance."""
    x = _as_numpy(far, "far").astype(np.float64)
    y = _as_numpy(tar, "tar").astype(np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise DataError(f"far and tar must be 1-D of the same length >= 2, got shapes {x.shape} and {y.shape}; pass roc()'s output")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("far or tar hold NaN or infinite values; pass roc()'s output")
    if (np.diff(x) < 0).any():
        raise DataError("far must be non-decreasing; pass roc()'s output in its order")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def eer(distances, same) -> tuple[float, float]:
    """Equal error rate ``(eer, threshold)``: the operating point where FAR = FRR (= 1 - TAR).

    One number for "how separable are same and different pairs" that needs no chosen
    threshold. The empirical FAR and FRR rarely meet exactly at a ROC point, so the EER is
    taken where the straight ROC segment between the two bracketing points (the last point
    with FAR < FRR and the first with FAR >= FRR) crosses the line FAR = FRR; the threshold
    is interpolated linearly between those two points' thresholds with the same weight. When
    the crossing lies on the first segment (from "accept nothing"), the threshold is the
    smallest distance.
    """
    far, tar, thresholds = roc(distances, same)
    gap = far - (1.0 - tar)  # -1 at (0,0), +1 at (1,1), non-decreasing in between
    i = int(np.argmax(gap >= 0))
    g0, g1 = gap[i - 1], gap[i]
    t = 1.0 if g1 == g0 else float(-g0 / (g1 - g0))
    rate = far[i - 1] + t * (far[i] - far[i - 1])
    lo, hi = thresholds[i - 1], thresholds[i]
    tau = hi if not np.isfinite(lo) else lo + t * (hi - lo)
    return float(rate), float(tau)


def tar_at_far(distances, same, far_targets: Sequence[float] = (1e-1, 1e-2, 1e-3), people: int | None = None) -> dict:
    """TAR at fixed FAR: for each target, the largest TAR whose FAR <= target, and its threshold.

    This is how a deployed verifier is set: "let in at most 1 impostor in 1000, how many
    genuine users pass?". Returns ``{target: {"tar", "far", "threshold", "different_pairs",
    "note"}}`` where ``far`` is the FAR actually reached and ``threshold`` the largest
    accepted distance (accept ``d <= threshold``). A FAR of ``target`` cannot be measured with
    fewer than ``1/target`` different pairs (a single false accept already exceeds it): then
    ``tar`` and ``threshold`` are ``None`` and ``note`` says how many pairs are needed.
    A measured FAR also comes with ``far_ci95`` (Clopper–Pearson), ``people`` (the
    identities behind the different pairs, when given) and ``warning`` (see `rate_estimate`).
    """
    targets = _check_targets(far_targets, "far_targets")
    d, s = _check_pairs(distances, same)
    far, tar, thresholds = _roc(d, s)
    n_diff = int((~s).sum())
    out = {}
    for target in targets:
        entry = {"tar": None, "far": None, "threshold": None, "different_pairs": n_diff, "note": None}
        if not _resolvable(n_diff, target):
            entry["note"] = (
                f"FAR {target:g} needs at least {math.ceil(1 / target - 1e-9)} different pairs, only {n_diff} available"
            )
        else:
            i = int(np.flatnonzero(far <= target + 1e-12)[-1])  # tar is non-decreasing along the curve
            entry.update(tar=float(tar[i]), far=float(far[i]))
            sure = rate_estimate(int(round(far[i] * n_diff)), n_diff, people, target, "FAR")
            entry.update(far_ci95=sure["ci95"], people=sure["people"], warning=sure["warning"])
            if np.isfinite(thresholds[i]):
                entry["threshold"] = float(thresholds[i])
            else:
                entry["note"] = (
                    f"no threshold reaches FAR <= {target:g}: different pairs tie at the smallest distance; TAR is 0"
                )
        out[target] = entry
    return out


def _best_threshold(d: np.ndarray, s: np.ndarray, presorted: bool = False) -> float:
    """The threshold maximising accuracy on ``(d, s)``; midway between distinct distances."""
    if not presorted:
        order = np.argsort(d, kind="stable")
        d, s = d[order], s[order]
    last = np.flatnonzero(np.r_[d[1:] != d[:-1], True])
    values = d[last]
    acc_same = np.cumsum(s)[last]
    acc_diff = (last + 1) - acc_same
    n_diff = int((~s).sum())
    correct = np.r_[n_diff, acc_same + (n_diff - acc_diff)]  # index 0: accept nothing
    k = int(np.argmax(correct))
    if k == 0:
        return float(np.nextafter(values[0], -np.inf))
    if k == len(values):
        return float(values[-1])
    return float((values[k - 1] + values[k]) / 2.0)


def kfold_accuracy(distances, same, folds: int = 10, seed: int = 0) -> tuple[float, float, np.ndarray]:
    """Verification accuracy by the LFW protocol: ``(mean, std, thresholds)`` over ``folds``.

    For each fold the threshold that maximises accuracy on the *other* folds is chosen
    (midway between the two distances around the best cut) and the accuracy is measured on
    the held-out fold, so the threshold is never tuned on the pairs it is scored on. Folds
    are seeded and stratified (same and different pairs are spread evenly). ``std`` is the
    sample standard deviation (ddof=1) of the fold accuracies; LFW's standard error is
    ``std / sqrt(folds)``. ``thresholds`` holds each fold's chosen tau; a wide spread means the
    threshold is unstable. Accuracy depends on the share of same pairs (with 1% same pairs,
    "always different" scores 99%): balance them, as LFW does (50/50), e.g. with
    ``pairs_from_labels(..., max_pairs=<number of same pairs>)``.
    """
    d, s = _check_pairs(distances, same)
    order = np.argsort(d, kind="stable")  # sorted once; every training subset stays sorted
    d, s = d[order], s[order]
    folds = int(folds)
    if folds < 2:
        raise DataError(f"folds must be at least 2, got {folds}")
    if len(d) < folds:
        raise DataError(f"{len(d)} pairs cannot be split into {folds} folds; use fewer folds or more pairs")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(d), dtype=np.int64)
    offset = 0
    for mask in (s, ~s):  # stratified: deal each kind of pair round-robin after a shuffle
        idx = rng.permutation(np.flatnonzero(mask))
        fold_of[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    accuracies, taus = [], []
    for f in range(folds):
        test = fold_of == f
        tau = _best_threshold(d[~test], s[~test], presorted=True)
        accuracies.append(float(((d[test] <= tau) == s[test]).mean()))
        taus.append(tau)
    acc = np.asarray(accuracies)
    return float(acc.mean()), float(acc.std(ddof=1)), np.asarray(taus)


class Pairs(NamedTuple):
    """Pairs drawn from a labelled set: unpack as ``distances, same, index = pairs``."""

    distances: np.ndarray  # (M,) float64 squared Euclidean distance
    same: np.ndarray  # (M,) bool, the two samples share an identity
    index: np.ndarray  # (M, 2) int64 sample indices, index[:, 0] < index[:, 1]


def pairs_from_index(embeddings, index, same) -> Pairs:
    """Given pairs (e.g. an LFW-style pairs file): ``index`` ``(M, 2)`` sample indices, ``same`` ``(M,)`` bools."""
    e = np.asarray(embeddings, dtype=np.float64)
    index, same = np.asarray(index, dtype=np.int64).reshape(-1, 2), np.asarray(same, dtype=bool).reshape(-1)
    if len(index) != len(same) or not len(index):
        raise DataError(f"need one same/different flag per pair and at least one pair, got {len(index)} pairs and {len(same)} flags")
    if index.min() < 0 or index.max() >= len(e):
        raise DataError(f"pair indices must lie in 0..{len(e) - 1}, got {index.min()}..{index.max()}")
    distances = ((e[index[:, 0]] - e[index[:, 1]]) ** 2).sum(1)
    return Pairs(distances, same, np.sort(index, axis=1))


def pairs_from_labels(embeddings, labels, max_pairs: int | None = None, seed: int = 0) -> Pairs:
    """Every same-identity pair and every (or ``max_pairs`` random) different pair, with distances.

    Turns an embedded, labelled set into verification pairs for `roc` and friends.
    Same pairs are few and precious, so all are kept; different pairs grow as N² and
    ``max_pairs`` caps them (drawn uniformly without replacement, seeded). Distances are
    squared Euclidean between the embeddings as given (pass L2-normalised embeddings, as
    ``embed`` writes them). Memory: the output plus chunks of ``4096`` pairs, never an
    ``N x N x D`` array; without ``max_pairs`` the output itself is O(N²).
    """
    e, y = _check_embeddings(embeddings, labels, "the set")
    n = len(e)
    if n < 2:
        raise DataError("need at least 2 embeddings to form a pair")
    if max_pairs is not None and int(max_pairs) < 1:
        raise DataError(f"max_pairs must be a positive number of different pairs or None, got {max_pairs}")
    _, code = np.unique(y, return_inverse=True)
    code = code.reshape(-1)
    rng = np.random.default_rng(seed)

    # Same pairs: i < j inside each identity.
    order = np.argsort(code, kind="stable")
    starts = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1]])
    sizes = np.diff(np.r_[starts, n])
    same_parts = []
    for start, size in zip(starts, sizes):
        if size > 1:
            members = np.sort(order[start : start + size])
            a, b = np.triu_indices(size, 1)
            same_parts.append(np.stack([members[a], members[b]], 1))
    if not same_parts:
        raise DataError(
            f"no identity among the {len(sizes)} has 2 samples, so there are no same-identity pairs; "
            "add a second sample of some identities"
        )
    same_idx = np.concatenate(same_parts)

    # Different pairs: all of them, or a uniform sample without replacement.
    n_diff = n * (n - 1) // 2 - len(same_idx)
    if n_diff == 0:
        raise DataError("all samples share one identity, so there are no different-identity pairs; add other identities")
    if max_pairs is None or int(max_pairs) >= n_diff or int(max_pairs) * 4 > n_diff:
        rows = []
        for i in range(n - 1):
            j = np.arange(i + 1, n)
            j = j[code[j] != code[i]]
            rows.append(np.stack([np.full(len(j), i), j], 1))
        diff_idx = np.concatenate(rows)
        if max_pairs is not None and int(max_pairs) < len(diff_idx):
            diff_idx = diff_idx[np.sort(rng.choice(len(diff_idx), int(max_pairs), replace=False))]
    else:  # rejection sampling of unordered pairs; each is equally likely, duplicates dropped
        want, keys = int(max_pairs), np.empty(0, np.int64)
        while len(keys) < want:
            i = rng.integers(0, n, 2 * want)
            j = rng.integers(0, n, 2 * want)
            ok = code[i] != code[j]
            lo, hi = np.minimum(i, j)[ok], np.maximum(i, j)[ok]
            new = lo.astype(np.int64) * n + hi
            _, first = np.unique(np.r_[keys, new], return_index=True)
            keys = np.r_[keys, new][np.sort(first)]  # keep first occurrences in draw order
        keys = np.sort(keys[:want])
        diff_idx = np.stack([keys // n, keys % n], 1)

    index = np.concatenate([same_idx, diff_idx]).astype(np.int64)
    distances = np.empty(len(index), dtype=np.float64)
    for start in range(0, len(index), _CHUNK):
        block = index[start : start + _CHUNK]
        delta = e[block[:, 0]] - e[block[:, 1]]
        distances[start : start + _CHUNK] = (delta * delta).sum(1)
    same = np.zeros(len(index), dtype=bool)
    same[: len(same_idx)] = True
    return Pairs(distances, same, index)


# --------------------------------------------------------------------------- identification (1:N)


def _identity_distances(gallery_emb, gallery_labels, probe_emb, probe_labels):
    """Shared set-up: per chunk of probes, the distance to every gallery *identity* (closest sample).

    Returns ``(identities, probe_y, mated, gallery_samples, chunks)`` where ``chunks()``
    yields ``(rows, dist (len(rows), K))``.
    """
    g, gy = _check_embeddings(gallery_emb, gallery_labels, "gallery")
    p, py = _check_embeddings(probe_emb, probe_labels, "probe")
    if g.shape[1] != p.shape[1]:
        raise DataError(
            f"gallery embeddings have {g.shape[1]} dimensions but probes have {p.shape[1]}; embed both with the same model"
        )
    identities, gcode = np.unique(gy, return_inverse=True)
    gcode = gcode.reshape(-1)
    order = np.argsort(gcode, kind="stable")
    starts = np.flatnonzero(np.r_[True, gcode[order][1:] != gcode[order][:-1]])
    center = g.mean(0)  # distances are translation invariant; centring curbs round-off
    g_sorted, p = g[order] - center, p - center
    mated = np.isin(py, identities)

    step = max(1, min(_CHUNK, _CHUNK_ELEMENTS // len(g)))  # ~128 MB of distances per chunk

    def chunks():
        for start in range(0, len(p), step):
            rows = np.arange(start, min(start + step, len(p)))
            dist = _sq_distances(p[rows], g_sorted)
            yield rows, np.minimum.reduceat(dist, starts, axis=1)

    return identities, py, mated, len(g), chunks


def identification(gallery_emb, gallery_labels, probe_emb, probe_labels, ranks: Sequence[int] = (1, 5)) -> dict:
    """Closed-set identification (1:N): rank-k accuracy, the CMC curve.

    A probe is correct at rank k when its identity is among the k gallery identities nearest
    to it. With several gallery samples per identity, an identity's distance is that of its
    closest sample. Ties are counted against the probe (an identity at exactly the true
    identity's distance ranks ahead of it), so the accuracy is never flattered. Probes whose
    identity is not enrolled cannot be identified; they are skipped and counted in
    ``skipped_probes`` (use `open_set` for them). Rank-1 accuracy falls as the gallery
    grows, so read it together with ``gallery_identities``.

    Returns ``{"rank_<k>": accuracy for each k, "cmc": accuracies at ranks 1..max(ranks),
    "probes", "skipped_probes", "gallery_identities", "gallery_samples"}``.
    """
    ranks = [int(k) for k in np.atleast_1d(ranks)]
    if not ranks or min(ranks) < 1:
        raise DataError(f"ranks must be positive integers, got {ranks}")
    identities, py, mated, n_gallery, chunks = _identity_distances(gallery_emb, gallery_labels, probe_emb, probe_labels)
    if not mated.any():
        raise DataError(
            "no probe identity is enrolled in the gallery; closed-set identification needs probes of gallery identities"
        )
    probe_rank = np.empty(len(py), dtype=np.int64)
    for rows, dist in chunks():
        m = mated[rows]
        if not m.any():
            continue
        sub = dist[m]
        col = np.searchsorted(identities, py[rows][m])
        true_d = sub[np.arange(len(sub)), col]
        probe_rank[rows[m]] = (sub <= true_d[:, None]).sum(1)  # includes itself: rank 1 = nothing closer
    rank = probe_rank[mated]
    top = max(ranks)
    cmc = [float((rank <= k).mean()) for k in range(1, top + 1)]
    out = {f"rank_{k}": cmc[k - 1] for k in ranks}
    out.update(
        cmc=cmc,
        probes=int(mated.sum()),
        skipped_probes=int((~mated).sum()),
        gallery_identities=len(identities),
        gallery_samples=n_gallery,
    )
    return out


def open_set(gallery_emb, gallery_labels, probe_emb, probe_labels, fpir_targets: Sequence[float] = (0.1, 0.01)) -> dict:
    """Open-set identification: "which enrolled person is this, or nobody?".

    Probes whose identity is not in the gallery are *non-mated*. A search returns its
    nearest gallery identity when that distance is ``<= tau``, otherwise "not enrolled".
    For each target FPIR (false positive identification rate: share of non-mated searches
    that return someone), ``tau`` is calibrated on the non-mated probes' best distances: the
    largest tau with FPIR <= target, i.e. just below the ``(floor(target * M) + 1)``-th
    smallest of the M non-mated distances (``inf`` for a target of 1). At that tau, DIR (detection and identification
    rate) is the share of mated probes whose rank-1 identity is correct AND whose distance is
    ``<= tau``. As in `tar_at_far`, a target needs at least ``1/target`` non-mated probes;
    otherwise ``dir`` and ``threshold`` are ``None`` with a ``note``.

    Each measured FPIR comes with its 95% Clopper–Pearson interval ``fpir_ci95`` and a
    one-line ``warning`` when the non-mated searches, or the ``non_mated_people`` behind
    them, are too few to support the target (see `rate_estimate`).

    Returns ``{"fpir": {target: {"dir", "fpir", "fpir_ci95", "threshold", "warning",
    "note"}}, "rank_1": closed-set rank-1 rate of the mated probes, "mated_probes",
    "non_mated_probes", "non_mated_people", "gallery_identities", "gallery_samples"}``.
    """
    targets = _check_targets(fpir_targets, "fpir_targets")
    identities, py, mated, n_gallery, chunks = _identity_distances(gallery_emb, gallery_labels, probe_emb, probe_labels)
    n_mated, n_non = int(mated.sum()), int((~mated).sum())
    if n_mated == 0:
        raise DataError("no probe identity is enrolled in the gallery; open-set evaluation needs mated probes too")
    if n_non == 0:
        raise DataError(
            "every probe identity is enrolled in the gallery; open-set thresholds are calibrated on probes of people "
            "NOT enrolled: hold some identities out of the gallery"
        )
    best = np.empty(len(py))
    hit = np.zeros(len(py), dtype=bool)
    for rows, dist in chunks():
        nearest = dist.argmin(1)
        best[rows] = dist[np.arange(len(rows)), nearest]
        hit[rows] = identities[nearest] == py[rows]
    non = np.sort(best[~mated])
    non_mated_people = int(len(np.unique(py[~mated])))
    deff = design_effect(best[~mated], py[~mated])
    mated_best, mated_hit = best[mated], hit[mated]
    out = {}
    for target in targets:
        entry = {"dir": None, "fpir": None, "threshold": None, "note": None}
        if not _resolvable(n_non, target):
            entry["note"] = (
                f"FPIR {target:g} needs at least {math.ceil(1 / target - 1e-9)} non-mated probes, only {n_non} available"
            )
        else:
            allowed = int(math.floor(target * n_non + 1e-9))
            tau = math.inf if allowed >= n_non else float(np.nextafter(non[allowed], -np.inf))
            false_positives = int((non <= tau).sum())
            sure = rate_estimate(false_positives, n_non, non_mated_people, target, "FPIR", deff)
            entry.update(
                threshold=tau,
                fpir=false_positives / n_non,
                dir=float((mated_hit & (mated_best <= tau)).mean()),
                fpir_ci95=sure["ci95"],
                effective_searches=sure["effective_trials"],
                warning=sure["warning"],
            )
        out[target] = entry
    return {
        "fpir": out,
        "rank_1": float(mated_hit.mean()),
        "mated_probes": n_mated,
        "non_mated_probes": n_non,
        "non_mated_people": non_mated_people,
        "gallery_identities": len(identities),
        "gallery_samples": n_gallery,
    }


# --------------------------------------------------------------------------- one-shot / few-shot


def few_shot_episodes(
    embeddings,
    labels,
    n_way: int = 5,
    k_shot: int = 1,
    queries: int = 5,
    episodes: int = 200,
    seed: int = 0,
) -> dict:
    """N-way k-shot accuracy: can a new person be recognised from k enrolled examples?

    Each episode draws ``n_way`` identities with at least ``k_shot + 1`` samples, enrolls
    ``k_shot`` random samples of each (prototype = mean of their embeddings, not
    re-normalised) and classifies up to ``queries`` other samples per identity by the
    nearest prototype (squared Euclidean). Chance is ``1 / n_way``. Returns ``{"accuracy":
    mean over episodes, "ci95": 1.96 * std / sqrt(episodes), "episodes", "n_way", "k_shot",
    "queries", "chance"}``. ``accuracy ± ci95`` is a 95% confidence interval for the
    episode sampling only: episodes reuse the same samples, so with few identities the
    interval is too narrow for "a new data set like this one" (use many identities).
    """
    e, y = _check_embeddings(embeddings, labels, "the set")
    n_way, k_shot, queries, episodes = int(n_way), int(k_shot), int(queries), int(episodes)
    if n_way < 2 or k_shot < 1 or queries < 1 or episodes < 1:
        raise DataError(
            f"need n_way >= 2, k_shot >= 1, queries >= 1, episodes >= 1; got {n_way}, {k_shot}, {queries}, {episodes}"
        )
    ids, code, counts = np.unique(y, return_inverse=True, return_counts=True)
    code = code.reshape(-1)
    eligible = np.flatnonzero(counts >= k_shot + 1)
    if len(eligible) < n_way:
        raise DataError(
            f"{n_way}-way {k_shot}-shot episodes need {n_way} identities with at least {k_shot + 1} samples each, "
            f"only {len(eligible)} of {len(ids)} have that many; lower n_way or k_shot, or add samples"
        )
    members = {int(c): np.flatnonzero(code == c) for c in eligible}
    rng = np.random.default_rng(seed)
    accuracies = np.empty(episodes)
    for episode in range(episodes):
        chosen = rng.choice(eligible, n_way, replace=False)
        protos, q_rows, q_class = [], [], []
        for cls, identity in enumerate(chosen):
            idx = rng.permutation(members[int(identity)])
            protos.append(e[idx[:k_shot]].mean(0))
            q = idx[k_shot : k_shot + queries]
            q_rows.append(q)
            q_class.append(np.full(len(q), cls))
        q_rows, q_class = np.concatenate(q_rows), np.concatenate(q_class)
        predicted = _sq_distances(e[q_rows], np.stack(protos)).argmin(1)
        accuracies[episode] = (predicted == q_class).mean()
    std = float(accuracies.std(ddof=1)) if episodes > 1 else 0.0
    return {
        "accuracy": float(accuracies.mean()),
        "ci95": 1.96 * std / math.sqrt(episodes),
        "episodes": episodes,
        "n_way": n_way,
        "k_shot": k_shot,
        "queries": queries,
        "chance": 1.0 / n_way,
    }


# --------------------------------------------------------------------------- across sessions


def session_templates(embeddings, labels, sessions) -> tuple[np.ndarray, np.ndarray, list]:
    """One template per session: the mean of its samples' embeddings, L2-normalised again.

    A *session* is one recording (an ECG record, a 20-second take, one day's photos): its
    samples (heartbeats, windows) share its conditions. Returns ``(templates, labels,
    names)`` in order of first appearance; every sample of a session must share its label.
    """
    e, y = _check_embeddings(embeddings, labels, "session")
    s = _as_numpy(sessions, "sessions").astype(str)
    if s.shape != y.shape:
        raise DataError(f"sessions has {len(s)} entries but there are {len(y)} samples; pass one session name per sample")
    names, first, code = np.unique(s, return_index=True, return_inverse=True)
    order = np.argsort(first)
    templates, out_labels = [], []
    for k in order:
        rows = code.reshape(-1) == k
        if len(np.unique(y[rows])) > 1:
            raise DataError(f"session {names[k]!r} holds samples of several identities; a session is one person's recording")
        mean = e[rows].mean(0)
        templates.append(mean / max(np.linalg.norm(mean), 1e-12))
        out_labels.append(y[rows][0])
    return np.stack(templates), np.asarray(out_labels), [str(names[k]) for k in order]


def cross_session(embeddings, labels, sessions, enrolled_fraction: float = 0.5, fpir_targets=(0.1, 0.01),
                  ranks: Sequence[int] = (1, 5), seed: int = 0) -> dict:  # fmt: skip
    """Enrol a person from ONE session, identify them from their other sessions, reject strangers.

    The realistic protocol for biometrics recorded over days (ECG-ID, speakers): the
    gallery holds the first session of each person (its template, see
    `session_templates`); every later session of an enrolled person is a mated search.
    ``closed_set``: all people with two or more sessions are enrolled; searches are whole
    sessions (``sessions``) and single samples (``samples``, e.g. one heartbeat).
    ``open_set``: only ``enrolled_fraction`` of them (seeded) are enrolled; every session of
    everyone else (people with one session included) is a search that must be rejected,
    so DIR is reported at each FPIR.
    ``verification``: EER and AUC over all pairs of session templates.
    """
    e, y = _check_embeddings(embeddings, labels, "session")
    templates, t_labels, names = session_templates(e, y, sessions)
    s = _as_numpy(sessions, "sessions").astype(str)
    people, counts = np.unique(t_labels, return_counts=True)
    repeat = people[counts >= 2]
    if len(repeat) < 2:
        raise DataError(
            f"cross-session evaluation needs at least 2 people with 2 or more sessions, got {len(repeat)}; "
            "add recordings from other days"
        )
    first = np.array([np.flatnonzero(t_labels == p)[0] for p in repeat])
    later = np.setdiff1d(np.flatnonzero(np.isin(t_labels, repeat)), first)
    later_samples = np.flatnonzero(np.isin(s, [names[i] for i in later]))
    out = {
        "people": int(len(people)),
        "people_with_2_sessions": int(len(repeat)),
        "sessions": len(names),
        "closed_set": {
            "sessions": identification(templates[first], t_labels[first], templates[later], t_labels[later], ranks),
            "samples": identification(templates[first], t_labels[first], e[later_samples], y[later_samples], ranks),
        },
    }
    for entry in out["closed_set"].values():
        entry.pop("cmc")
    rng = np.random.default_rng(seed)
    n_enrolled = min(len(repeat) - 1, max(1, round(enrolled_fraction * len(repeat))))
    enrolled = np.sort(rng.choice(repeat, size=n_enrolled, replace=False))
    gallery = first[np.isin(t_labels[first], enrolled)]
    searches = np.setdiff1d(np.arange(len(templates)), gallery)
    result = open_set(templates[gallery], t_labels[gallery], templates[searches], t_labels[searches], fpir_targets)
    out["open_set"] = {**result, "fpir": {str(k): v for k, v in result["fpir"].items()}}
    pairs = pairs_from_labels(templates, t_labels)
    far, tar, _ = roc(pairs.distances, pairs.same)
    out["verification"] = {"eer": eer(pairs.distances, pairs.same)[0], "auc": auc(far, tar),
                           "same_pairs": int(pairs.same.sum()), "different_pairs": int((~pairs.same).sum())}  # fmt: skip
    return out


# --------------------------------------------------------------------------- k-NN classification


def knn_accuracy(train_emb, train_labels, test_emb, test_labels, k: int = 5) -> float:
    """Share of test samples whose ``k`` nearest training embeddings vote for their label.

    Reads an embedding as a classifier (the k-NN accuracy of MedMNIST-style benchmarks):
    a majority vote among the ``k`` training samples nearest in squared Euclidean
    distance; a tied vote goes to the tied label whose first neighbour is nearest.
    """
    train, y_train = _check_embeddings(train_emb, train_labels, "train")
    test, y_test = _check_embeddings(test_emb, test_labels, "test")
    if train.shape[1] != test.shape[1]:
        raise DataError(f"train embeddings have {train.shape[1]} dimensions but test embeddings {test.shape[1]}; use one encoder")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(train):
        raise DataError(f"k must be an integer between 1 and the {len(train)} training samples, got {k!r}")
    classes, y_index = np.unique(y_train, return_inverse=True)
    rows = max(1, _CHUNK_ELEMENTS // len(train))
    correct = 0
    for start in range(0, len(test), rows):
        nearest = np.argsort(_sq_distances(test[start : start + rows], train), axis=1, kind="stable")[:, :k]
        row, voted = np.arange(len(nearest)), y_index[nearest]
        votes = np.zeros((len(nearest), len(classes)))
        np.add.at(votes, (row[:, None], voted), 1.0)
        first = np.full(votes.shape, float(k))  # rank of each label's nearest neighbour, for ties
        for j in range(k - 1, -1, -1):
            first[row, voted[:, j]] = j
        correct += int((classes[np.argmax(votes * (k + 1) - first, axis=1)] == y_test[start : start + rows]).sum())
    return correct / len(test)
