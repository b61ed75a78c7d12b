"""Property-based tests (hypothesis): override parsing, Gram matrices and the style cost, and
the gallery as a state machine checked against a plain dict.

Mining against brute force lives in test_losses.py (test_triplet_loss_equals_brute_force) and
exact search against brute force in test_search.py; they are not repeated here.
"""

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from convgen import config
from convgen.errors import ConfigError, DataError
from convgen.style.costs import GramCost, gram

# -- override parsing ------------------------------------------------------------------

KEY_PART = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, width=64)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEY_PART, inner, max_size=3), max_leaves=8)


def as_override_text(value) -> str:
    """What a user would type after ``key=``: the value as one line of flow-style YAML."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True)
    return text.strip().removesuffix("...").strip()


@settings(max_examples=150, deadline=None)
@given(st.lists(KEY_PART, min_size=1, max_size=4), VALUES)
def test_any_yaml_value_round_trips_through_an_override(parts, value):
    """Whatever YAML can write on one line, key=value parses back to the same key path and value."""
    assert config.parse_override(f"{'.'.join(parts)}={as_override_text(value)}") == (tuple(parts), value)


TRAIN_OVERRIDES = st.fixed_dictionaries(
    {},
    optional={
        "batch_size": st.integers(1, 512),
        "epochs": st.integers(1, 1000),
        "optimizer.lr": st.floats(1e-6, 1.0),
        "grad_clip": st.floats(0, 10),
        "loss.margin": st.floats(0, 2),
        "encoder.embedding_dim": st.integers(2, 256),
        "encoder.channels": st.lists(st.integers(1, 64), min_size=1, max_size=4),
        "split.val_fraction": st.floats(0.05, 0.5),
        "device": st.sampled_from(["cpu", "auto", "cuda:1"]),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TRAIN_OVERRIDES)
def test_a_saved_config_resolves_to_itself(tmp_path, overrides):
    """The config.yaml a run saves reproduces the run: resolving it gives the same config."""
    texts = [f"{key}={as_override_text(value)}" for key, value in overrides.items()]
    recipe, resolved = config.resolve("train", texts)
    saved = tmp_path / "config.yaml"
    saved.write_text(config.dump(recipe.name, resolved))
    again_recipe, again = config.resolve(str(saved))
    assert again_recipe.name == "train" and again == resolved
    for key, value in overrides.items():
        node = resolved
        for part in key.split("."):
            node = node[part]
        assert node == value


@settings(max_examples=40, deadline=None)
@given(st.lists(KEY_PART, min_size=1, max_size=3), st.integers())
def test_keys_a_recipe_does_not_have_are_always_refused(parts, value):
    """No override can add a key the recipe does not define (components aside)."""
    _, defaults = config.resolve("train")
    node = defaults
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
    else:
        assume(False)  # an existing key: not this property's business
    assume(parts[0] not in ("dataset", "encoder", "loss"))  # component blocks take their factory's arguments
    with pytest.raises(ConfigError, match="unknown key"):
        config.resolve("train", [f"{'.'.join(parts)}={value}"])


# -- Gram matrices and the style cost --------------------------------------------------


@st.composite
def activations(draw, batch=None, channels=None):
    """A float64 activation ``(N, C, *spatial)`` with 1 to 3 spatial axes."""
    dims = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)) if batch is None else batch, draw(st.integers(1, 5)) if channels is None else channels,
             *draw(st.lists(st.integers(1, 5), min_size=dims, max_size=dims)))  # fmt: skip
    seed = draw(st.integers(0, 2**32 - 1))
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape) * draw(st.sampled_from([1e-3, 1.0, 1e3])))


def close(a, b, scale):
    return torch.allclose(a, b, rtol=1e-9, atol=1e-12 * scale)


@settings(max_examples=80, deadline=None)
@given(activations(), st.floats(-1e3, 1e3, allow_nan=False))
def test_gram_is_symmetric_positive_semidefinite_and_quadratic_in_scale(a, c):
    g = gram(a)
    scale = float(a.abs().max()) ** 2 * a[0, 0].numel() + 1e-300
    assert g.shape == (a.shape[0], a.shape[1], a.shape[1])
    assert torch.equal(g, g.transpose(1, 2)) or close(g, g.transpose(1, 2), scale)
    assert (torch.diagonal(g, dim1=1, dim2=2) >= 0).all(), "the diagonal is a sum of squares"
    assert (torch.linalg.eigvalsh(g) >= -1e-9 * scale).all(), "a Gram matrix is positive semi-definite"
    assert close(gram(c * a), c**2 * g, scale * max(c * c, 1.0))
    positions = torch.randperm(a[0, 0].numel(), generator=torch.Generator().manual_seed(0))
    shuffled = a.flatten(2)[:, :, positions].reshape(a.shape)
    assert close(gram(shuffled), g, scale), "a Gram matrix forgets where things are"


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 5).flatmap(lambda c: st.tuples(activations(batch=1, channels=c), activations(batch=1, channels=c))), st.floats(1e-2, 1e2))
def test_style_cost_is_non_negative_symmetric_zero_for_itself_and_quartic_in_scale(pair, c):
    g, t = pair  # the same layer: the same channels
    cost = GramCost()
    value = cost(g, t)
    assert value >= 0
    assert cost(g, g) == 0
    if g.shape == t.shape:
        assert torch.isclose(value, cost(t, g), rtol=1e-9, atol=1e-300)
    assert torch.isclose(cost(c * g, c * t), c**4 * value, rtol=1e-7, atol=1e-300)


@settings(max_examples=60, deadline=None)
@given(activations(batch=1), st.integers(0, 2**32 - 1))
def test_style_cost_is_zero_exactly_when_the_grams_agree(a, seed):
    """Mixing positions orthogonally keeps the Gram (cost 0); changing one channel's energy does not."""
    cost = GramCost()
    m = a[0, 0].numel()
    q, _ = torch.linalg.qr(torch.from_numpy(np.random.default_rng(seed).normal(size=(m, m))))
    mixed = (a.flatten(2) @ q).reshape(a.shape)
    scale = float(gram(a).abs().max()) / m + 1e-300
    assert cost(mixed, a) <= 1e-18 * scale**2
    assume(float(a.abs().max()) > 0)
    louder = a.clone()
    louder[:, 0] *= 2  # the first channel's energy changes fourfold, so the Grams differ
    assume(float(gram(a)[0, 0, 0]) > 1e-6 * scale * m)
    assert cost(louder, a) > 0


# -- the gallery as a state machine ----------------------------------------------------

DIM = 8
NAMES = ["ann", "bob", "cy", "dee", "eve"]


class GalleryMachine(RuleBasedStateMachine):
    """Enrol / append / remove / rename / identify / reopen on a real SQLite gallery, checked
    against a dict of name -> embeddings. A second handle (another connection, as another
    process would have) is searched too, so its index must follow the change log."""

    scoring = "closest"

    def __init__(self):
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="gallery-machine-"))
        self.path = self.folder / "g.db"
        self.model: dict[str, np.ndarray] = {}
        self.changes = 0

    @initialize()
    def create(self):
        from convgen.gallery.store import Gallery

        Gallery.create(self.path, fingerprint="fp", encoder={"name": "test"}, dim=DIM, scoring=self.scoring).close()
        self.writer, self.reader = Gallery.open(self.path), Gallery.open(self.path)

    def teardown(self):
        for handle in (getattr(self, "writer", None), getattr(self, "reader", None)):
            if handle is not None:
                handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def vectors(seed, count):
        return np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)

    @rule(name=st.sampled_from(NAMES), seed=st.integers(0, 10**6), count=st.integers(1, 3))
    def enrol(self, name, seed, count):
        e = self.vectors(seed, count)
        if name in self.model:
            with pytest.raises(DataError, match="already enrolled"):
                self.writer.enrol(name, e)
            return
        self.writer.enrol(name, e)
        self.model[name] = e
        self.changes += 1

    @rule(name=st.sampled_from(NAMES), seed=st.integers(0, 10**6))
    def append(self, name, seed):
        e = self.vectors(seed, 1)
        self.writer.enrol(name, e, append=True)  # appending to nobody enrols them
        self.model[name] = np.concatenate([self.model[name], e]) if name in self.model else e
        self.changes += 1

    @rule(name=st.sampled_from(NAMES))
    def remove(self, name):
        if name not in self.model:
            with pytest.raises(DataError, match="is not enrolled"):
                self.writer.remove(name)
            return
        self.writer.remove(name)
        del self.model[name]
        self.changes += 1

    @rule(old=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
    def rename(self, old, new):
        if old not in self.model or new in self.model:
            with pytest.raises(DataError):
                self.writer.rename(old, new)
            return
        self.writer.rename(old, new)
        self.model[new] = self.model.pop(old)
        self.changes += 1

    @rule()
    def reopen(self):
        from convgen.gallery.store import Gallery

        self.writer.close()
        self.reader.close()
        self.writer, self.reader = Gallery.open(self.path), Gallery.open(self.path)

    def expected(self, query, k):
        """Brute force: the ``k`` nearest people's distances by the gallery's scoring, nearest first."""
        rows = []
        for name, e in self.model.items():
            if self.scoring == "mean":
                mean = e.astype(np.float64).mean(0)
                e = (mean / np.linalg.norm(mean))[None]
            rows.append((float(((e.astype(np.float64) - query) ** 2).sum(1).min()), name))
        return sorted(rows)[:k]

    @rule(seed=st.integers(0, 10**6), k=st.integers(1, 6), use_reader=st.booleans())
    def identify(self, seed, k, use_reader):
        query = self.vectors(seed, 1)
        handle = self.reader if use_reader else self.writer
        if not self.model:
            with pytest.raises(DataError, match="nobody enrolled"):
                handle.search(query, k)
            return
        found = handle.search(query, k)[0]
        ranking = self.expected(query[0].astype(np.float64), len(self.model))
        truth = {name: distance for distance, name in ranking}
        assert len(found) == min(k, len(self.model)) and len({n for n, _ in found}) == len(found)
        for (name, distance), (want_distance, _) in zip(found, ranking):
            assert distance == pytest.approx(want_distance, rel=1e-4, abs=1e-5), "the k nearest distances, in order"
            assert truth[name] == pytest.approx(distance, rel=1e-4, abs=1e-5), "each at that person's own distance"
        entries = sum(len(e) for e in self.model.values()) if self.scoring == "closest" else len(self.model)
        assert len(handle.index()) == entries, "the index holds the gallery's entries, no stale ones"

    @invariant()
    def same_people_and_samples(self):
        if not hasattr(self, "writer"):
            return
        for handle in (self.writer, self.reader):
            assert {p.name: p.samples for p in handle.people()} == {n: len(e) for n, e in self.model.items()}
        assert self.writer.generation == self.changes, "one generation per change, none for a refused one"


class MeanScoringGalleryMachine(GalleryMachine):
    scoring = "mean"


SETTINGS = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestGalleryStateMachine = GalleryMachine.TestCase
TestGalleryStateMachine.settings = SETTINGS
TestMeanScoringGalleryStateMachine = MeanScoringGalleryMachine.TestCase
TestMeanScoringGalleryStateMachine.settings = settings(max_examples=12, stateful_step_count=20, deadline=None)
