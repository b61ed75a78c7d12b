import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convgen.errors import DataError
from convgen.metric import evaluation as ev
from convgen.metric import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gaussian_pairs(n_same, n_diff, delta, sigma=1.0, seed=0):
    rng = np.random.default_rng(seed)
    d = np.r_[rng.normal(0.0, sigma, n_same), rng.normal(delta, sigma, n_diff)]
    return d, np.r_[np.ones(n_same, bool), np.zeros(n_diff, bool)]


# ----------------------------------------------------------------------------- ROC / AUC


@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn(ties):
    metrics = pytest.importorskip("sklearn.metrics")
    d, s = gaussian_pairs(300, 700, 1.0, seed=1)
    if ties:
        d = np.round(d, 1)  # many ties, also between same and different pairs
    far, tar, thresholds = ev.roc(d, s)
    fpr, tpr, sk_thr = metrics.roc_curve(s, -d, drop_intermediate=False)
    np.testing.assert_allclose(far, fpr)
    np.testing.assert_allclose(tar, tpr)
    np.testing.assert_allclose(thresholds[1:], -sk_thr[1:])
    assert thresholds[0] == -np.inf and (far[0], tar[0], far[-1], tar[-1]) == (0, 0, 1, 1)
    assert len(thresholds) == len(np.unique(d)) + 1
    assert ev.auc(far, tar) == pytest.approx(metrics.roc_auc_score(s, -d), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=40))
def test_auc_is_the_probability_a_same_pair_is_closer(pairs):
    """Without sklearn: AUC = P(d_same < d_diff) + P(tie) / 2 (Mann-Whitney), ties included."""
    d = np.array([p[0] for p in pairs], float) / 2
    s = np.array([p[1] for p in pairs])
    assume(s.any() and not s.all())
    far, tar, thresholds = ev.roc(d, s)
    a, b = d[s][:, None], d[~s][None, :]
    assert ev.auc(far, tar) == pytest.approx(((a < b) + 0.5 * (a == b)).mean())
    for f, t, tau in zip(far[1:], tar[1:], thresholds[1:]):  # each point is "accept d <= tau"
        assert (f, t) == (pytest.approx((d[~s] <= tau).mean()), pytest.approx((d[s] <= tau).mean()))


def test_tied_distances_move_together():
    far, tar, thresholds = ev.roc([0.5, 0.5, 0.2], [True, False, True])
    np.testing.assert_allclose(far, [0, 0, 1])
    np.testing.assert_allclose(tar, [0, 0.5, 1])
    np.testing.assert_allclose(thresholds, [-np.inf, 0.2, 0.5])
    assert ev.auc(far, tar) == pytest.approx(0.75)  # the tie counts one half


def test_torch_inputs_are_accepted():
    d, s = gaussian_pairs(50, 50, 2.0)
    far, tar, _ = ev.roc(torch.from_numpy(d).float(), torch.from_numpy(s))
    assert ev.auc(far, tar) > 0.8


# ----------------------------------------------------------------------------- EER


def test_eer_tiny_example_by_hand():
    # sorted: .1 S, .3 D, .4 S, .8 D -> (FAR, FRR): (0,1) (0,.5) (.5,.5) (.5,0) (1,0)
    assert ev.eer([0.1, 0.4, 0.3, 0.8], [1, 1, 0, 0]) == (0.5, 0.3)
    # 4 same, 4 different; (FAR, FRR) after .1 .2 .3 .4: (0,.75) (0,.5) (.25,.5) (.25,.25): exact at .4
    d = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9]
    s = [1, 1, 0, 1, 0, 0, 0, 1]
    assert ev.eer(d, s) == pytest.approx((0.25, 0.4))
    # Interpolated: 1 same, 2 different. sorted .2 D, .5 S, .6 D.
    # points (FAR, FRR): (0,1) (.5,1) (.5,0) (1,0); FAR - FRR: -1, -.5, .5 -> halfway between
    # (.5,1) and (.5,0): EER .5, tau halfway between .2 and .5.
    assert ev.eer([0.2, 0.5, 0.6], [0, 1, 0]) == pytest.approx((0.5, 0.35))
    # .1 S, .2 D: (FAR, FRR) (0,1) (0,0): the crossing is the point at .1
    assert ev.eer([0.1, 0.2], [1, 0]) == (0.0, 0.1)
    # Crossing on the first segment (from "accept nothing", tau -inf): tau is the smallest distance
    rate, tau = ev.eer([0.1, 0.1], [1, 0])  # tie: (0,1) -> (1,0) diagonal: EER .5 at tau .1
    assert (rate, tau) == (0.5, 0.1)


def test_eer_of_two_gaussians_is_closed_form():
    delta, sigma = 2.0, 1.0
    d, s = gaussian_pairs(20000, 20000, delta, sigma, seed=2)
    rate, tau = ev.eer(d, s)
    expected = 0.5 * math.erfc(delta / (2 * sigma) / math.sqrt(2))  # Phi(-delta / (2 sigma))
    assert rate == pytest.approx(expected, abs=0.01)
    assert tau == pytest.approx(delta / 2, abs=0.05)


# ----------------------------------------------------------------------------- TAR @ FAR


def test_tar_at_far_by_hand_and_the_resolution_note():
    same = [0.1, 0.2, 0.35, 0.5]
    diff = [0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]  # 10 different pairs
    d = np.r_[same, diff]
    s = np.r_[np.ones(4, bool), np.zeros(10, bool)]
    out = ev.tar_at_far(d, s, far_targets=(0.1, 0.3, 0.01))
    # FAR <= .1 allows one false accept (.3) but not .4: accept d <= .35 -> TAR 3/4
    entry = out[0.1]
    assert {k: entry[k] for k in ("tar", "far", "threshold", "different_pairs", "note")} == {
        "tar": 0.75, "far": 0.1, "threshold": 0.35, "different_pairs": 10, "note": None}  # fmt: skip
    # 1 false accept of 10: the exact 95% interval, and a warning (10 pairs cannot bound 10% below 20%)
    assert entry["far_ci95"] == pytest.approx([0.0025286, 0.4450161], abs=1e-6)
    assert "FAR 0.1 rests on only 10 trials" in entry["warning"] and entry["people"] is None
    # FAR <= .3 allows .3 .4 .6 -> accept d <= .6 -> all 4 same pairs
    assert out[0.3]["tar"] == 1.0 and out[0.3]["threshold"] == 0.6 and out[0.3]["far"] == pytest.approx(0.3)
    # 10 different pairs cannot measure a FAR of 1% : no number, a note instead
    assert out[0.01]["tar"] is None and out[0.01]["threshold"] is None
    assert "100 different pairs" in out[0.01]["note"] and "only 10" in out[0.01]["note"]


def test_tar_at_far_with_different_pairs_tied_at_the_smallest_distance():
    out = ev.tar_at_far([0.0, 0.0, 0.5], [0, 0, 1], far_targets=(0.5,))
    assert out[0.5]["tar"] == 0.0 and out[0.5]["threshold"] is None and "tie" in out[0.5]["note"]


# ----------------------------------------------------------------------------- k-fold


def test_kfold_accuracy_separable_and_random():
    d, s = gaussian_pairs(300, 300, 20.0, seed=3)
    mean, std, taus = ev.kfold_accuracy(d, s, folds=10)
    assert (mean, std) == (1.0, 0.0) and len(taus) == 10
    assert ((taus > d[s].max()) & (taus < d[~s].min())).all()

    d, s = gaussian_pairs(1000, 1000, 0.0, seed=4)  # same and different indistinguishable
    mean, std, taus = ev.kfold_accuracy(d, s, folds=10)
    assert abs(mean - 0.5) < 0.05 and std > 0
    assert ev.kfold_accuracy(d, s, seed=7)[0] == ev.kfold_accuracy(d, s, seed=7)[0]  # seeded


def test_kfold_threshold_is_the_best_cut_on_the_training_pairs():
    for seed in range(5):
        d, s = gaussian_pairs(40, 60, 1.0, seed=seed)
        d = np.round(d, 1)  # ties too
        tau = ev._best_threshold(d, s)
        candidates = np.r_[-np.inf, np.unique(d)]
        best = max(((d <= c) == s).mean() for c in candidates)
        assert ((d <= tau) == s).mean() == best


# ----------------------------------------------------------------------------- pairs


def test_pairs_from_labels_all_and_subsampled():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(30, 5))
    y = rng.integers(0, 4, 30)
    d, s, index = ev.pairs_from_labels(e, y)
    assert len(d) == 30 * 29 // 2
    assert {tuple(p) for p in index} == {(i, j) for i in range(30) for j in range(i + 1, 30)}
    np.testing.assert_allclose(d, ((e[index[:, 0]] - e[index[:, 1]]) ** 2).sum(1))
    np.testing.assert_array_equal(s, y[index[:, 0]] == y[index[:, 1]])

    n_same = int(s.sum())
    for max_pairs in (5, 150):  # rejection sampling, and choice among all different pairs
        sub = ev.pairs_from_labels(torch.from_numpy(e), torch.from_numpy(y), max_pairs=max_pairs, seed=1)
        assert sub.same.sum() == n_same and (~sub.same).sum() == max_pairs
        assert len({tuple(p) for p in sub.index}) == len(sub.index)
        assert (y[sub.index[~sub.same, 0]] != y[sub.index[~sub.same, 1]]).all()
        np.testing.assert_allclose(sub.distances, ((e[sub.index[:, 0]] - e[sub.index[:, 1]]) ** 2).sum(1))
        again = ev.pairs_from_labels(e, y, max_pairs=max_pairs, seed=1)
        np.testing.assert_array_equal(again.index, sub.index)


def test_pairs_subsample_large_set_is_uniform_enough():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(2000, 3))
    y = np.arange(2000) % 100
    sub = ev.pairs_from_labels(e, y, max_pairs=20000, seed=0)
    diff = sub.index[~sub.same]
    assert len(diff) == 20000 and len(np.unique(diff[:, 0] * 2000 + diff[:, 1])) == 20000
    # every sample takes part in about 2 * 20000 / 2000 = 20 different pairs
    counts = np.bincount(diff.ravel(), minlength=2000)
    assert 10 < counts.mean() < 30 and counts.max() < 50


# ----------------------------------------------------------------------------- identification


def brute_force_ranks(g, gy, p, py):
    ranks = []
    for x, label in zip(p, py):
        per_identity = {}
        for row, identity in zip(g, gy):
            dist = float(((x - row) ** 2).sum())
            per_identity[identity] = min(per_identity.get(identity, math.inf), dist)
        if label not in per_identity:
            continue
        ranks.append(sum(1 for v in per_identity.values() if v <= per_identity[label]))
    return np.array(ranks)


def test_identification_matches_a_brute_force_loop():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(12, 6))
    gy = np.repeat(np.arange(12), 3)
    g = centers[gy] + 0.8 * rng.normal(size=(36, 6))
    py = np.r_[rng.integers(0, 12, 40), [50, 51]]  # two probes of people not enrolled
    p = np.r_[centers[py[:40]], rng.normal(size=(2, 6))] + 0.8 * rng.normal(size=(42, 6))
    out = ev.identification(g, gy, p, py, ranks=(1, 3, 5, 20))
    ranks = brute_force_ranks(g, gy, p, py)
    for k in (1, 3, 5, 20):
        assert out[f"rank_{k}"] == pytest.approx((ranks <= k).mean())
    assert out["rank_20"] == 1.0 and len(out["cmc"]) == 20
    assert np.all(np.diff(out["cmc"]) >= 0) and 0 < out["rank_1"] < 1
    assert (out["probes"], out["skipped_probes"], out["gallery_identities"], out["gallery_samples"]) == (40, 2, 12, 36)


def test_identification_counts_ties_against_the_probe():
    g = np.array([[0.0], [2.0]])
    out = ev.identification(g, [0, 1], [[1.0]], [0], ranks=(1, 2))
    assert out["rank_1"] == 0.0 and out["rank_2"] == 1.0


# ----------------------------------------------------------------------------- open set


def test_open_set_on_constructed_data():
    # 1-D embeddings: five enrolled people at 0, 10, 20, 30, 40.
    g, gy = np.array([[0.0], [10.0], [20.0], [30.0], [40.0]]), np.arange(5)
    mated = [(0.1, 0), (10.3, 1), (20.5, 2), (30.7, 3), (44.0, 4), (9.5, 0)]  # the last is misidentified
    non = [(40.0 + 0.2 * (k + 1), 100 + k) for k in range(10)]  # best distances .04 .16 .36 .64 1 ...
    p = np.array([[x] for x, _ in mated + non])
    py = np.array([label for _, label in mated + non])
    out = ev.open_set(g, gy, p, py, fpir_targets=(0.1, 0.3, 0.01, 1.0))
    assert (out["mated_probes"], out["non_mated_probes"], out["gallery_identities"]) == (6, 10, 5)
    assert out["rank_1"] == pytest.approx(5 / 6)
    # FPIR <= .1 of 10 non-mated: one may pass (.04) but not .16 -> mated .01 and .09 detected
    r = out["fpir"][0.1]
    assert r["dir"] == pytest.approx(2 / 6) and r["fpir"] == pytest.approx(0.1) and 0.04 <= r["threshold"] < 0.16
    # FPIR <= .3: .04 .16 .36 pass, .64 not -> .01 .09 .25 .49 detected (the wrong .25 does not count)
    r = out["fpir"][0.3]
    assert r["dir"] == pytest.approx(4 / 6) and r["fpir"] == pytest.approx(0.3) and 0.36 <= r["threshold"] < 0.64
    # everything accepted: DIR = rank-1 rate
    assert out["fpir"][1.0]["dir"] == pytest.approx(5 / 6) and out["fpir"][1.0]["threshold"] == math.inf
    r = out["fpir"][0.01]  # 10 non-mated probes cannot resolve 1%
    assert r["dir"] is None and r["threshold"] is None and "100 non-mated probes" in r["note"]


def test_open_set_needs_non_mated_and_mated_probes():
    g, gy = np.eye(3), np.arange(3)
    with pytest.raises(DataError, match="hold some identities out of the gallery"):
        ev.open_set(g, gy, g, gy)
    with pytest.raises(DataError, match="needs mated probes"):
        ev.open_set(g, gy, g, gy + 10)


# ----------------------------------------------------------------------------- few-shot


def clusters(identities, per_identity, dim, spread, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(identities, dim))
    y = np.repeat(np.arange(identities), per_identity)
    return centers[y] + spread * rng.normal(size=(len(y), dim)), y


def test_few_shot_separated_clusters_and_random_embeddings():
    e, y = clusters(20, 6, 16, 0.01)
    out = ev.few_shot_episodes(e, y, n_way=5, k_shot=1, queries=5, episodes=100)
    assert out["accuracy"] == 1.0 and out["episodes"] == 100 and out["chance"] == 0.2

    # The CI covers episode sampling, not the draw of the data set, so use many identities.
    rng = np.random.default_rng(1)
    e, y = rng.normal(size=(5000, 16)), np.repeat(np.arange(500), 10)
    out = ev.few_shot_episodes(e, y, n_way=5, k_shot=1, queries=5, episodes=400, seed=3)
    assert abs(out["accuracy"] - 0.2) <= out["ci95"] and 0 < out["ci95"] < 0.05
    five_shot = ev.few_shot_episodes(*clusters(20, 8, 16, 1.0), n_way=5, k_shot=5, queries=3, episodes=50)
    assert five_shot["k_shot"] == 5 and 0.2 < five_shot["accuracy"] <= 1.0


def test_few_shot_needs_enough_identities():
    e, y = clusters(6, 3, 4, 0.1)
    y[:2] = [10, 11]  # identity 0 now has 1 sample: 5 identities of 3 samples, 1 of 1, 2 singletons
    assert ev.few_shot_episodes(e, y, n_way=5, k_shot=2, episodes=3)["accuracy"] == 1.0  # exactly 5 qualify
    with pytest.raises(DataError, match=r"6-way 2-shot episodes need 6 .* only 5 of 8 have that many"):
        ev.few_shot_episodes(e, y, n_way=6, k_shot=2)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "distances, same, message",
    [
        ([0.1, 0.2, 0.3], [True, False], "3 pairs but same has 2"),
        ([0.1, np.nan], [True, False], "NaN or infinite"),
        ([0.1, 0.2], [True, True], "include pairs of different identities"),
        ([0.1, 0.2], [False, False], "none of the 2 pairs is a same-identity pair"),
        ([[0.1, 0.2]], [[True, False]], "must be 1-D"),
        ([0.1, 0.2], [2, 0], "same must be booleans"),
    ],
)
def test_bad_pairs_are_one_line_data_errors(distances, same, message):
    for fn in (ev.roc, ev.eer, ev.tar_at_far, ev.kfold_accuracy):
        with pytest.raises(DataError, match=message) as info:
            fn(distances, same)
        assert "\n" not in str(info.value)


def test_bad_embeddings_and_arguments_are_data_errors():
    e = np.zeros((4, 3))
    with pytest.raises(DataError, match="4 embeddings but 3 labels"):
        ev.pairs_from_labels(e, [0, 0, 1])
    bad = e.copy()
    bad[1, 2] = np.nan
    with pytest.raises(DataError, match="1 of 4 gallery embeddings hold NaN"):
        ev.identification(bad, [0, 1, 2, 3], e, [0, 1, 2, 3])
    with pytest.raises(DataError, match="3 dimensions but probes have 2"):
        ev.identification(e, [0, 1, 2, 3], np.zeros((2, 2)), [0, 1])
    with pytest.raises(DataError, match="must be 2-D"):
        ev.few_shot_episodes(np.zeros(4), [0, 0, 1, 1])
    with pytest.raises(DataError, match="no same-identity pairs"):
        ev.pairs_from_labels(e, [0, 1, 2, 3])
    with pytest.raises(DataError, match="no different-identity pairs"):
        ev.pairs_from_labels(e, [7, 7, 7, 7])
    with pytest.raises(DataError, match=r"far_targets must lie in \(0, 1\]"):
        ev.tar_at_far([0.1, 0.2], [1, 0], far_targets=(0.0,))
    with pytest.raises(DataError, match="cannot be split into 10 folds"):
        ev.kfold_accuracy([0.1, 0.2], [1, 0])
    with pytest.raises(DataError, match="no probe identity is enrolled"):
        ev.identification(e, [0, 1, 2, 3], e, [9, 9, 9, 9])


# ----------------------------------------------------------------------------- plots


def assert_png_only(folder, names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no temporary file left
    for name in names:
        data = (folder / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)


def test_plots_write_png_files_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    d, s = gaussian_pairs(200, 2000, 3.0)
    far, tar, _ = ev.roc(d, s)
    rate, tau = ev.eer(d, s)
    plots.plot_roc(tmp_path / "roc.png", far, tar, eer=(rate, tau), label="test")
    plots.plot_roc(tmp_path / "roc_plain.png", far, tar)
    plots.plot_distance_histograms(tmp_path / "hist.png", d, s, threshold=tau)
    rows = [{"epoch": i, "loss": 1 / (i + 1), "val_eer": 0.3 / (i + 1)} for i in range(5)] + [{"epoch": 5, "lr": 0.1}]
    plots.plot_curves(tmp_path / "curves.png", rows, keys=("loss", "val_eer"))
    plots.plot_curves(tmp_path / "sub" / "loss.png", rows)
    assert_png_only(tmp_path / "sub", ["loss.png"])
    (tmp_path / "sub" / "loss.png").unlink()
    (tmp_path / "sub").rmdir()
    assert_png_only(tmp_path, ["roc.png", "roc_plain.png", "hist.png", "curves.png"])
    with pytest.raises(DataError, match="none of the rows has a number"):
        plots.plot_curves(tmp_path / "x.png", rows, keys=("accuracy",))
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- across sessions


def _recordings(seed=0, people=8, dim=12, spread=0.9):
    """People with 1 to 3 recordings of 4 samples each; labels, recording names, unit embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    emb, labels, sessions = [], [], []
    for person in range(people):
        for recording in range(1 + person % 3):
            for _ in range(4):
                v = centres[person] + spread * rng.normal(size=dim)
                emb.append(v / np.linalg.norm(v))
                labels.append(person)
                sessions.append(f"p{person}/r{recording}")
    return np.array(emb), np.array(labels), sessions


def test_session_templates_are_normalised_means():
    emb, labels, sessions = _recordings()
    templates, t_labels, names = ev.session_templates(emb, labels, sessions)
    rows = [i for i, s in enumerate(sessions) if s == "p2/r1"]
    mean = emb[rows].mean(0)
    k = names.index("p2/r1")
    np.testing.assert_allclose(templates[k], mean / np.linalg.norm(mean))
    assert t_labels[k] == 2 and len(names) == len(set(sessions))


def test_cross_session_matches_a_brute_force_search():
    emb, labels, sessions = _recordings(spread=1.5)
    result = ev.cross_session(emb, labels, sessions, ranks=(1,))
    templates, t_labels, names = ev.session_templates(emb, labels, sessions)
    enrolled = {}  # each person with 2+ recordings, enrolled from their first
    for template, label, name in zip(templates, t_labels, names):
        if sum(t_labels == label) >= 2 and label not in enrolled:
            enrolled[label] = template
    people = np.array(list(enrolled))
    gallery = np.stack(list(enrolled.values()))
    correct = []
    for template, label, name in zip(templates, t_labels, names):
        if label in enrolled and not np.array_equal(template, enrolled[label]):
            correct.append(people[((gallery - template) ** 2).sum(1).argmin()] == label)
    closed = result["closed_set"]["sessions"]
    assert closed["probes"] == len(correct) and closed["rank_1"] == pytest.approx(np.mean(correct))
    assert result["people_with_2_sessions"] == len(enrolled) and result["sessions"] == len(names)
    assert result["open_set"]["gallery_identities"] == round(0.5 * len(enrolled))


def test_cross_session_refuses_a_recording_of_two_people_and_too_few_repeats():
    emb, labels, sessions = _recordings()
    mixed = list(sessions)
    mixed[0] = sessions[-1]
    with pytest.raises(DataError, match="several identities"):
        ev.cross_session(emb, labels, mixed)
    single = [f"p{label}" for label in labels]  # one recording per person: nobody to identify later
    with pytest.raises(DataError, match="at least 2 people with 2 or more sessions"):
        ev.cross_session(emb, labels, single)


def test_knn_accuracy_matches_a_brute_force_vote():
    rng = np.random.default_rng(3)
    train, test = rng.normal(size=(60, 5)), rng.normal(size=(25, 5))
    y_train, y_test = rng.integers(0, 3, 60), rng.integers(0, 3, 25)
    for k in (1, 4, 7):
        right = 0
        for x, y in zip(test, y_test):
            order = np.argsort(((train - x) ** 2).sum(1), kind="stable")[:k]
            votes = {c: (int((y_train[order] == c).sum()), -int(np.flatnonzero(y_train[order] == c)[0]) if (y_train[order] == c).any() else 0)
                     for c in np.unique(y_train)}  # fmt: skip
            right += max(votes, key=votes.get) == y
        assert ev.knn_accuracy(train, y_train, test, y_test, k=k) == pytest.approx(right / len(test))
    with pytest.raises(DataError, match="k must be"):
        ev.knn_accuracy(train, y_train, test, y_test, k=0)
