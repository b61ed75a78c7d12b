"""Batches of P identities × K samples, and identity-disjoint splits.

Online triplet mining needs positives in every batch, so batches are built by identity:
P identities, K samples each; where samples come from recordings (sessions), an
identity's K samples come from as many different recordings as it has, so that a
positive pair teaches "same person, another day", not "same recording". Validation must
measure performance on people the encoder never saw, so splits keep every identity on
one side.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from convgen.errors import DataError


def _groups(labels: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[int(label)].append(index)
    return dict(groups)


class PKSampler(Sampler[list[int]]):
    """Yields batches (lists of indices) of ``p`` identities × up to ``k`` samples.

    An identity with fewer than ``k`` samples contributes all it has, without repeats
    (a repeated sample would be a zero-distance positive that teaches nothing); an
    identity with one sample still serves as a negative. Within an epoch each identity's
    samples are drawn from a shuffled queue, so every sample is seen before any repeats.
    An epoch has ``ceil(N / (p·k))`` batches. Batches depend only on ``seed`` and the
    epoch (`set_epoch`), which makes a resumed run repeat the same batches; give
    each distributed rank its own ``seed``.

    ``sessions`` (one recording name per sample, optional): an identity's samples are
    then drawn round-robin over its recordings in a shuffled order, so its K samples
    span ``min(K, recordings)`` different recordings, and every sample of a recording is
    still seen before any repeats.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0, sessions: Sequence | None = None):
        if p < 2 or k < 2:
            raise DataError(f"a P×K batch needs P ≥ 2 identities and K ≥ 2 samples each, got P={p}, K={k}")
        self.groups = _groups(labels)
        if len(self.groups) < 2:
            raise DataError(f"the training set has {len(self.groups)} identity; triplets need at least 2 identities")
        if all(len(members) < 2 for members in self.groups.values()):
            raise DataError("every identity has a single sample; triplets need identities with at least 2 samples")
        self.p, self.k, self.seed, self.epoch = min(p, len(self.groups)), k, seed, 0
        self.num_samples = len(labels)
        if sessions is not None and len(sessions) != len(labels):
            raise DataError(f"{len(sessions)} session names for {len(labels)} samples; pass one per sample")
        # identity -> its recordings, each a list of sample indices (one recording each without sessions)
        self.recordings: dict[int, list[list[int]]] = {}
        for identity, members in self.groups.items():
            if sessions is None:
                self.recordings[identity] = [[m] for m in members]
                continue
            by_session: dict = defaultdict(list)
            for m in members:
                by_session[str(sessions[m])].append(m)
            self.recordings[identity] = [by_session[name] for name in sorted(by_session)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / (self.p * self.k))

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        ids = list(self.groups)
        queues: dict = {}  # (identity, recording) -> samples left this round; identity -> recordings left

        def shuffled(items: list) -> list:
            return [items[j] for j in torch.randperm(len(items), generator=gen).tolist()]

        def take(identity: int, count: int) -> list[int]:
            recordings = self.recordings[identity]
            picked: list[int] = []
            while len(picked) < min(count, len(self.groups[identity])):
                if not queues.get(identity):  # a new round over the recordings, in a new order
                    queues[identity] = shuffled(list(range(len(recordings))))
                r = queues[identity].pop()
                if not queues.get((identity, r)):
                    queues[identity, r] = shuffled(recordings[r])
                candidate = queues[identity, r].pop()
                if candidate not in picked:
                    picked.append(candidate)
            return picked

        order: list[int] = []
        for _ in range(len(self)):
            if len(order) < self.p:
                order += [ids[j] for j in torch.randperm(len(ids), generator=gen).tolist()]
            chosen, order = order[: self.p], order[self.p :]
            yield [index for identity in chosen for index in take(identity, self.k)]


def identity_split(labels: Sequence[int], val_fraction: float = 0.2, seed: int = 0,
                   sessions: Sequence | None = None) -> tuple[list[int], list[int]]:  # fmt: skip
    """Split sample indices so that no identity is on both sides.

    Validation identities are drawn among those with at least 2 samples (a one-shot
    test needs one to enrol and one to query). With ``sessions`` (one recording name per
    sample), among those with at least 2 recordings when there are enough of them, so
    that validation can enrol from one recording and search with the others. Returns
    ``(train_indices, val_indices)``.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    groups = _groups(labels)
    eligible = sorted(i for i, members in groups.items() if len(members) >= 2)
    n_val = max(2, round(val_fraction * len(groups)))
    if sessions is not None:
        repeat = [i for i in eligible if len({str(sessions[m]) for m in groups[i]}) >= 2]
        if len(repeat) >= n_val:
            eligible = repeat
    if len(groups) - n_val < 2 or len(eligible) < n_val:
        raise DataError(
            f"cannot hold out {n_val} identities for validation from {len(groups)} "
            f"({len(eligible)} with ≥ 2 samples) and keep 2 for training; add identities or lower split.val_fraction"
        )
    gen = torch.Generator().manual_seed(seed)
    val_ids = {eligible[j] for j in torch.randperm(len(eligible), generator=gen)[:n_val].tolist()}
    train = [i for i, label in enumerate(labels) if int(label) not in val_ids]
    val = [i for i, label in enumerate(labels) if int(label) in val_ids]
    return train, val


def stratified_split(labels: Sequence[int], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split sample indices so that every identity is on BOTH sides, in proportion.

    For datasets whose identities are a few classes (two diagnoses, say): holding whole
    classes out would leave nothing to learn from. Each class with at least 4 samples gives
    ``val_fraction`` of them (at least 2, a same pair) to validation. Returns
    ``(train_indices, val_indices)``.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    groups = _groups(labels)
    gen = torch.Generator().manual_seed(seed)
    val: list[int] = []
    for label in sorted(groups):
        members = groups[label]
        if len(members) >= 4:
            n_val = min(len(members) - 2, max(2, round(val_fraction * len(members))))
            val += [members[j] for j in torch.randperm(len(members), generator=gen)[:n_val].tolist()]
    if len({int(labels[i]) for i in val}) < 2:
        raise DataError("a stratified split needs at least 2 identities with 4 or more samples each; add samples")
    held = set(val)
    return [i for i in range(len(labels)) if i not in held], sorted(val)
