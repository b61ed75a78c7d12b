"""Metric losses: exact against brute-force triplet enumeration and against
pytorch-metric-learning, O(B²) memory at B=4096, a trainable pair classifier, and
one-line errors for batches a metric loss cannot use."""

import itertools
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from convgen.errors import ConfigError, DataError
from convgen.metric.losses import (
    LOOP_WIDTH,
    ArcFaceLoss,
    ContrastiveLoss,
    PairClassifierLoss,
    TripletLoss,
    pairwise_sq_dists,
    rank_among,
)

TRIPLET_VARIANTS = [  # (mining, semi_hard_fallback)
    ("all", "none"),
    ("semi-hard", "none"),
    ("semi-hard", "hardest"),
    ("batch-hard", "none"),
]


def make_batch(sizes, dim=8, seed=0, dtype=torch.float64):
    """L2-normalised random embeddings; identity i has ``sizes[i]`` samples, shuffled, with sparse label ids."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), 7 * i + 3) for i, n in enumerate(sizes)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    embeddings = F.normalize(torch.randn(len(labels), dim, generator=g, dtype=dtype), dim=1)
    return embeddings, labels


# ---------------------------------------------------------------------------------------
# Brute force: every triplet, enumerated one by one
# ---------------------------------------------------------------------------------------


def brute_triplets(e, labels, margin, mining, fallback):
    """The mined (a, p, n) index lists, decided triplet by triplet, and the active fraction."""
    labels = labels.tolist()
    d = [[float(((e[i] - e[j]) ** 2).sum()) for j in range(len(labels))] for i in range(len(labels))]
    chosen, valid, active = [], 0, 0
    for a, la in enumerate(labels):
        positives = [p for p, lp in enumerate(labels) if lp == la and p != a]
        negatives = [n for n, ln in enumerate(labels) if ln != la]
        if mining == "batch-hard":
            if positives and negatives:
                p = max(positives, key=lambda p: d[a][p])
                n = min(negatives, key=lambda n: d[a][n])
                chosen.append((a, p, n))
                valid, active = valid + 1, active + (d[a][p] - d[a][n] + margin > 0)
            continue
        for p in positives:
            window = []
            for n in negatives:
                valid += 1
                active += d[a][n] < d[a][p] + margin
                if mining == "all" or d[a][p] < d[a][n] < d[a][p] + margin:
                    window.append((a, p, n))
            if not window and mining == "semi-hard" and fallback == "hardest":
                if any(d[a][n] <= d[a][p] for n in negatives):
                    window.append((a, p, min(negatives, key=lambda n: d[a][n])))
            chosen.extend(window)
    return chosen, active / valid


def brute_loss(e, labels, margin, mining, reduction, fallback="none"):
    """``(loss, triplets with non-zero loss, active fraction)`` by explicit enumeration."""
    triplets, active_fraction = brute_triplets(e.detach(), labels, margin, mining, fallback)
    a, p, n = (torch.tensor(idx, dtype=torch.long) for idx in zip(*triplets)) if triplets else [torch.zeros(0, dtype=torch.long)] * 3
    hinge = F.relu(((e[a] - e[p]) ** 2).sum(1) - ((e[a] - e[n]) ** 2).sum(1) + margin)
    nonzero = int((hinge > 0).sum())
    loss = hinge.sum() if reduction == "sum" else hinge.sum() / max(nonzero, 1)
    return loss, nonzero, active_fraction


def assert_matches_brute_force(e, labels, margin, mining, reduction, fallback, tol=1e-5):
    x = e.clone().requires_grad_()
    loss_fn = TripletLoss(margin=margin, mining=mining, reduction=reduction, semi_hard_fallback=fallback)
    loss = loss_fn(x, labels)
    loss.backward()
    y = e.detach().double().clone().requires_grad_()  # the reference in float64, so that only our rounding is tested
    expected, nonzero, active_fraction = brute_loss(y, labels, margin, mining, reduction, fallback)
    expected.backward()
    assert loss.dtype == e.dtype and loss.ndim == 0
    loss, expected = float(loss.detach()), float(expected.detach())
    assert abs(loss - expected) <= tol * max(1.0, abs(expected))
    scale = max(1.0, float(y.grad.abs().max()))  # float32 gradients sum many terms: tolerance relative to their scale
    torch.testing.assert_close(x.grad.double(), y.grad, atol=tol * scale, rtol=tol)
    assert loss_fn.stats["triplets"] == nonzero
    assert loss_fn.stats["active_fraction"] == pytest.approx(active_fraction, abs=1e-12)
    assert loss_fn.stats["loss"] == pytest.approx(loss)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    sizes=st.lists(st.integers(1, 8), min_size=3, max_size=5),
    margin=st.sampled_from([0.05, 0.2, 0.5, 1.0]),
    dim=st.sampled_from([3, 8]),
)
def test_triplet_loss_equals_brute_force(seed, sizes, margin, dim):
    e, labels = make_batch([1, 2, *sizes], dim=dim, seed=seed)  # always a singleton and a pair
    for (mining, fallback), reduction in itertools.product(TRIPLET_VARIANTS, ["mean", "sum"]):
        assert_matches_brute_force(e, labels, margin, mining, reduction, fallback)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mining,fallback", TRIPLET_VARIANTS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_triplet_loss_equals_brute_force_float32_b24(seed, mining, fallback, reduction):
    e, labels = make_batch([1, 3, 4, 5, 5, 6], dim=16, seed=seed, dtype=torch.float32)
    assert len(labels) == 24
    assert_matches_brute_force(e, labels, 0.2, mining, reduction, fallback)


@pytest.mark.parametrize("mining,fallback", TRIPLET_VARIANTS)
def test_triplet_loss_equals_brute_force_with_large_identities(mining, fallback):
    assert LOOP_WIDTH < 19
    # 19 and 24 positives per anchor: more than LOOP_WIDTH, so ranks come from torch.searchsorted.
    e, labels = make_batch([1, 20, 3, 25], dim=8, seed=4, dtype=torch.float32)
    for reduction in ("mean", "sum"):
        assert_matches_brute_force(e, labels, 0.3, mining, reduction, fallback)


@pytest.mark.parametrize("inclusive", [True, False])
def test_rank_among_is_the_same_by_comparison_and_by_search(inclusive):
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 12, (9, 40), generator=g).float()  # many ties
    thresholds = torch.randint(0, 12, (9, 20), generator=g).float().sort(1).values
    thresholds[0, 5:] = float("inf")  # padding
    beyond = values[:, :, None] >= thresholds[:, None, :] if inclusive else values[:, :, None] > thresholds[:, None, :]
    for width in (3, 20):  # the comparison loop, then torch.searchsorted
        rank, below = rank_among(thresholds[:, :width], values, inclusive)
        assert torch.equal(rank.long(), beyond[:, :, :width].sum(2))
        assert torch.equal(below.long(), (~beyond[:, :, :width]).sum(1))


def test_semi_hard_fallback_adds_the_hardest_negative():
    # Anchor 0's only positive is farther than every negative: no semi-hard negative.
    e = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    plain = TripletLoss(margin=0.2, mining="semi-hard", reduction="sum")
    hardest = TripletLoss(margin=0.2, mining="semi-hard", reduction="sum", semi_hard_fallback="hardest")
    assert float(plain(e, labels)) == 0.0 and plain.stats["triplets"] == 0
    # Pairs (0,1): d_ap=9, nearest negative 1 → 8.2; (1,0): d_ap=9, nearest negative 4 → 5.2;
    # (2,3): d_ap=5, nearest negative 1 → 4.2; (3,2): d_ap=5, nearest negative 4 → 1.2.
    assert float(hardest(e, labels)) == pytest.approx(8.2 + 5.2 + 4.2 + 1.2)
    assert hardest.stats["triplets"] == 4


def test_no_active_triplet_gives_a_differentiable_zero():
    e = torch.tensor([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0], [5.0, 0.1]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    for mining in ("all", "semi-hard", "batch-hard"):
        loss_fn = TripletLoss(mining=mining)
        loss = loss_fn(e, labels)
        loss.backward()
        assert float(loss.detach()) == 0.0 and loss_fn.stats["active_fraction"] == 0.0 and loss_fn.stats["triplets"] == 0
        assert torch.count_nonzero(e.grad) == 0


def test_pairwise_sq_dists():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=g), torch.randn(4, 5, generator=g)
    torch.testing.assert_close(pairwise_sq_dists(x, y), torch.cdist(x, y).pow(2), atol=1e-5, rtol=1e-5)
    d = pairwise_sq_dists(x)
    assert torch.all(d.diagonal() == 0) and torch.all(d >= 0)
    torch.testing.assert_close(d, d.T)


# ---------------------------------------------------------------------------------------
# Equal to pytorch-metric-learning
# ---------------------------------------------------------------------------------------


def pml_loss(mining):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances, losses, miners

    distance = distances.LpDistance(power=2)
    loss = losses.TripletMarginLoss(margin=0.2, distance=distance)
    miner = {
        "all": None,
        "batch-hard": miners.BatchHardMiner(distance=distance),
        "semi-hard": miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=distance),
    }[mining]
    return lambda e, labels: loss(e, labels, miner(e, labels)) if miner else loss(e, labels)


@pytest.mark.parametrize("mining", ["all", "batch-hard", "semi-hard"])
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_loss_equals_pytorch_metric_learning(mining, seed):
    reference = pml_loss(mining)
    raw, labels = make_batch([1, 2, 3, 4, 4, 4, 5, 6, 8, 8, 8, 11], dim=32, seed=seed, dtype=torch.float32)
    ours_x, ref_x = raw.clone().requires_grad_(), raw.clone().requires_grad_()
    # LpDistance normalises its input, so ours sees normalised embeddings too (same gradient path).
    ours = TripletLoss(margin=0.2, mining=mining)(F.normalize(ours_x, dim=1), labels)
    expected = reference(ref_x, labels)
    ours.backward()
    expected.backward()
    assert float(ours.detach()) == pytest.approx(float(expected.detach()), abs=1e-5)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# Memory: O(B²), checked at B=4096
# ---------------------------------------------------------------------------------------


class LargestTensor(TorchDispatchMode):
    """Records the op and size of the largest tensor any op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.numel, self.op, self.ops = 0, None, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(func.overloadpacket.__name__)
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.op = t.numel(), func
        return out


def test_semi_hard_step_at_b4096_allocates_nothing_bigger_than_b_squared():
    b = 4096
    x = torch.randn(b, 128, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.arange(b) // 4
    largest = LargestTensor()
    with largest:
        loss = TripletLoss(mining="semi-hard")(F.normalize(x, dim=1), labels)
        loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert "sort" in largest.ops and "addmm" in largest.ops
    assert largest.numel <= b * (b + 1), (largest.op, largest.numel)


PEAK_RSS_SCRIPT = """
import resource, torch, torch.nn.functional as F
from convgen.metric.losses import TripletLoss
torch.manual_seed(0)
x = torch.randn(4096, 128, requires_grad=True)
labels = torch.arange(4096) // 4
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
TripletLoss(mining="semi-hard")(F.normalize(x, dim=1), labels).backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20)
"""


def test_semi_hard_step_at_b4096_peaks_under_1_gib():
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    peak_gib = float(out.stdout.split()[-1])  # ru_maxrss is in KiB on Linux
    assert peak_gib < 1.0, peak_gib  # the target is 4 GB; about 0.25 GiB today


# ---------------------------------------------------------------------------------------
# Contrastive loss
# ---------------------------------------------------------------------------------------


def test_contrastive_loss_equals_its_formula():
    e, labels = make_batch([1, 3, 4, 5], dim=4, seed=3)
    x = e.clone().requires_grad_()
    loss_fn = ContrastiveLoss(pos_margin=0.1, neg_margin=1.5)
    loss = loss_fn(x, labels)
    pos_terms, neg_terms = [], []
    for i, j in itertools.permutations(range(len(labels)), 2):
        d = ((e[i] - e[j]) ** 2).sum()
        if labels[i] == labels[j]:
            pos_terms.append(F.relu(d - 0.1))
        else:
            neg_terms.append(F.relu(1.5 - d))
    expected = torch.stack(pos_terms).mean() + torch.stack(neg_terms).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-10)
    assert loss_fn.stats["pos_loss"] == pytest.approx(float(torch.stack(pos_terms).mean()))
    active = sum(float(t) > 0 for t in pos_terms + neg_terms) / (len(pos_terms) + len(neg_terms))
    assert loss_fn.stats["active_fraction"] == pytest.approx(active)
    loss.backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------
# Pair classifier
# ---------------------------------------------------------------------------------------


def test_chi2_features_are_finite_for_zeros_and_signs():
    head = PairClassifierLoss(embedding_dim=4, distance="chi2")
    e1 = torch.tensor([[0.0, 1.0, -1.0, 1e-30], [0.0, -2.0, 3.0, -1e-30]], requires_grad=True)
    e2 = torch.tensor([[0.0, -1.0, -1.0, 0.0], [0.0, 2.0, -3.0, 1e-30]], requires_grad=True)
    with torch.no_grad():
        phi = head.features(e1, e2)
        assert torch.isfinite(phi).all() and (phi >= 0).all()
        assert phi[0, 0] == 0 and float(phi[0, 1]) == pytest.approx(2.0, rel=1e-5)  # 4 / (1 + 1)
        assert torch.all(phi <= e1.abs() + e2.abs() + 1e-6)  # bounded by |a| + |b|
    head.score(e1, e2).sum().backward()
    assert torch.isfinite(e1.grad).all() and torch.isfinite(e2.grad).all()
    labels = torch.tensor([0, 0, 1, 1])
    loss = head(torch.tensor([[0.0] * 4, [0.0] * 4, [-1.0, 0, 1, 0], [1.0, 0, -1, 0]]), labels)
    assert torch.isfinite(loss)


def test_pairs_are_balanced_deterministic_and_correctly_labelled():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # 3 + 1 + 6 = 10 positive pairs
    e = torch.randn(len(labels), 4)
    head, twin = PairClassifierLoss(embedding_dim=4, seed=5), PairClassifierLoss(embedding_dim=4, seed=5)
    same = labels[:, None] == labels[None, :]
    pos, neg = same & ~torch.eye(len(labels), dtype=torch.bool), ~same
    pairs, targets = head.balanced_pairs(pos, neg)
    assert len(pairs) == 20 and int(targets.sum()) == 10
    assert torch.all(pairs[:, 0] < pairs[:, 1]) and len({tuple(p) for p in pairs.tolist()}) == 20
    assert torch.equal(targets.bool(), labels[pairs[:, 0]] == labels[pairs[:, 1]])
    torch.testing.assert_close(twin.balanced_pairs(pos, neg)[0], pairs)
    head(e, labels)
    assert head.stats["pairs"] == 20
    # Fewer negative pairs than positive: all negatives and as many positives.
    labels = torch.tensor([0] * 10 + [1])
    same = labels[:, None] == labels[None, :]
    pairs, targets = head.balanced_pairs(same & ~torch.eye(11, dtype=torch.bool), ~same)
    assert len(pairs) == 20 and int(targets.sum()) == 10


@pytest.fixture
def one_thread():
    """Hundreds of tiny steps: with two threads, one busy core elsewhere slows them 50-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("distance", ["abs", "chi2"])
def test_pair_classifier_learns_two_separated_clusters(distance, one_thread):
    g = torch.Generator().manual_seed(0)

    def batch(n=16):
        centres = torch.stack([torch.full((8,), 2.0), torch.full((8,), -2.0)])
        labels = torch.arange(2).repeat_interleave(n)
        return centres[labels] + 0.5 * torch.randn(2 * n, 8, generator=g), labels

    torch.manual_seed(0)
    encoder = torch.nn.Linear(8, 16)
    loss_fn = PairClassifierLoss(embedding_dim=16, distance=distance)
    optimiser = torch.optim.SGD([*encoder.parameters(), *loss_fn.parameters()], lr=0.05)
    for _ in range(300):
        x, labels = batch()
        optimiser.zero_grad()
        loss_fn(encoder(x), labels).backward()
        optimiser.step()
    x, labels = batch(32)
    with torch.no_grad():
        loss_fn(encoder(x), labels)
        e = encoder(x)
        p_same, p_diff = loss_fn.score(e[0], e[1]), loss_fn.score(e[0:8], e[32:40])
    assert loss_fn.stats["pair_accuracy"] > 0.9, loss_fn.stats
    assert p_same.ndim == 0 and p_diff.shape == (8,)
    assert float(p_same) > 0.5 and torch.all(p_diff < 0.5)


# ---------------------------------------------------------------------------------------
# Bad input: one-line DataErrors
# ---------------------------------------------------------------------------------------

LOSSES = [
    lambda: TripletLoss(mining="all"),
    lambda: TripletLoss(mining="semi-hard"),
    lambda: TripletLoss(mining="batch-hard"),
    lambda: ContrastiveLoss(),
    lambda: PairClassifierLoss(embedding_dim=4),
    lambda: ArcFaceLoss(classes=6, embedding_dim=4),
]
BAD_BATCHES = {
    "nan": (torch.tensor([[float("nan"), 0, 0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0]]), torch.tensor([0, 0, 1]),
            "embeddings hold NaN or infinite values"),
    "inf": (torch.tensor([[float("inf"), 0, 0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0]]), torch.tensor([0, 0, 1]),
            "embeddings hold NaN or infinite values"),
    "label length": (torch.randn(4, 4), torch.tensor([0, 0, 1]), "one label per embedding"),
    "3-D": (torch.randn(4, 4, 1), torch.tensor([0, 0, 1, 1]), "2-D (batch, dim)"),
    "one identity": (torch.randn(4, 4), torch.tensor([5, 5, 5, 5]), "single identity"),
    "all singletons": (torch.randn(4, 4), torch.tensor([0, 1, 2, 3]), "no two samples of the same identity"),
}  # fmt: skip


@pytest.mark.parametrize("make_loss", LOSSES, ids=["all", "semi-hard", "batch-hard", "contrastive", "pair", "arcface"])
@pytest.mark.parametrize("case", BAD_BATCHES, ids=list(BAD_BATCHES))
def test_bad_batches_raise_one_line_data_errors(make_loss, case):
    embeddings, labels, message = BAD_BATCHES[case]
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        make_loss()(embeddings, labels)
    assert "\n" not in str(info.value)
    if case == "all singletons":
        assert "P×K sampler with K ≥ 2" in str(info.value)


def test_pair_classifier_rejects_embeddings_of_another_size():
    with pytest.raises(ConfigError, match="embedding_dim is 8 but the embeddings have 4 values"):
        PairClassifierLoss(embedding_dim=8)(torch.randn(4, 4), torch.tensor([0, 0, 1, 1]))


def test_bad_options_are_rejected():
    for kwargs in ({"mining": "hard"}, {"reduction": "max"}, {"semi_hard_fallback": "random"}, {"margin": -0.1}):
        with pytest.raises(ConfigError):
            TripletLoss(**kwargs)
    with pytest.raises(ConfigError):
        PairClassifierLoss(distance="l2")


# -- ArcFace -------------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.2, 0.5, 1.2])
def test_arcface_equals_pytorch_metric_learning(margin):
    """Loss and gradients equal PML's ArcFaceLoss (margin in degrees there), including targets past π − m."""
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import ArcFaceLoss as PMLArcFace

    torch.manual_seed(0)
    classes, dim = 7, 5
    labels = torch.arange(classes).repeat_interleave(4)
    raw = torch.randn(len(labels), dim, dtype=torch.float64)
    ours = ArcFaceLoss(classes=classes, embedding_dim=dim, margin=margin, scale=16.0).double()
    theirs = PMLArcFace(num_classes=classes, embedding_size=dim, margin=float(torch.rad2deg(torch.tensor(margin))), scale=16.0)
    theirs.W.data = ours.weight.detach().T.clone()
    x1, x2 = raw.clone().requires_grad_(), raw.clone().requires_grad_()
    mine, reference = ours(x1, labels), theirs(x2, labels)
    cosine = F.normalize(raw, dim=1) @ F.normalize(ours.weight.detach(), dim=1).T
    past_pi = cosine.gather(1, labels[:, None]) < torch.cos(torch.tensor(torch.pi - margin, dtype=torch.float64))
    if margin == 1.2:
        assert past_pi.any(), "the case past π − m is exercised"
    torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-8)
    mine.backward()
    reference.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(ours.weight.grad, theirs.W.grad.T, rtol=1e-5, atol=1e-8)


def test_arcface_without_margin_is_softmax_over_scaled_cosines():
    torch.manual_seed(1)
    loss = ArcFaceLoss(classes=3, embedding_dim=4, margin=0.0, scale=10.0)
    x, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    expected = F.cross_entropy(10.0 * F.normalize(x, dim=1) @ F.normalize(loss.weight, dim=1).T, labels)
    torch.testing.assert_close(loss(x, labels), expected)
    margined = ArcFaceLoss(classes=3, embedding_dim=4, margin=0.3, scale=10.0)
    margined.weight.data = loss.weight.data.clone()
    assert margined(x, labels) > expected, "the margin makes every sample's own class harder to win"


def test_arcface_learns_to_separate_identities(one_thread):
    """A linear encoder trained with ArcFace classifies its identities and pulls each one together."""
    torch.manual_seed(0)
    centres = torch.randn(4, 8) * 3
    labels = torch.arange(4).repeat_interleave(8)
    x = centres[labels] + torch.randn(len(labels), 8)
    encoder, loss = torch.nn.Linear(8, 6), ArcFaceLoss(classes=4, embedding_dim=6)
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    different = labels[:, None] != labels[None, :]

    def spread():  # mean distance to one's own identity over mean distance to the others
        dist = pairwise_sq_dists(F.normalize(encoder(x), dim=1).detach())
        return float(dist[same].mean() / dist[different].mean())

    before = spread()
    loss(F.normalize(encoder(x), dim=1), labels)
    assert loss.stats["accuracy"] < 1.0
    optimiser = torch.optim.Adam([*encoder.parameters(), *loss.parameters()], lr=0.05)
    for _ in range(60):
        optimiser.zero_grad()
        value = loss(F.normalize(encoder(x), dim=1), labels)
        value.backward()
        optimiser.step()
    assert loss.stats["accuracy"] == 1.0 and loss.stats["loss"] < 1.0
    assert spread() < before / 2


def test_arcface_refuses_labels_and_sizes_it_was_not_built_for():
    loss = ArcFaceLoss(classes=3, embedding_dim=4)
    with pytest.raises(DataError, match="a label is 5 but there are 3 classes"):
        loss(torch.randn(4, 4), torch.tensor([0, 0, 5, 5]))
    with pytest.raises(ConfigError, match="embedding_dim is 4 but the embeddings have 8 values"):
        loss(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]))
    for kwargs in ({"classes": None, "embedding_dim": 4}, {"classes": 1, "embedding_dim": 4},
                   {"classes": 3, "embedding_dim": 4, "margin": 2.0}, {"classes": 3, "embedding_dim": 4, "scale": 0}):  # fmt: skip
        with pytest.raises(ConfigError, match="arcface loss"):
            ArcFaceLoss(**kwargs)
