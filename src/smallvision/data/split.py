"""Train / validation / test: taken from the folders when given, else a seeded stratified split.

Files with identical content (same sha256) always land in the same split when smallvision
makes the split, so a duplicate cannot leak from train into test. When the folders give
the splits, duplicates across them are reported as leakage (and kept, as given).
"""
import collections
import dataclasses

import numpy as np

from ..checks import DEFAULT_SPLIT
from ..errors import SmallvisionError

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Splits:
    """Entry positions (into ``index.entries``) per split, and the duplicate report."""

    train: list
    validation: list
    test: list
    duplicates: list  # dicts: sha256, kind, files, splits, classes
    origin: str  # "folders", "folders+carved validation", or "seeded stratified split"

    def items(self):
        return [(name, getattr(self, name)) for name in SPLITS]


def _stratified(index, positions, fractions, seed):
    """Split ``positions`` per class by ``fractions``; files sharing a sha256 stay together."""
    rng = np.random.default_rng(seed)
    out = [[] for _ in fractions]
    by_class = collections.defaultdict(lambda: collections.defaultdict(list))
    for p in positions:
        e = index.entries[p]
        by_class[e.label][e.sha256].append(p)
    for label in sorted(by_class):
        groups = [by_class[label][sha] for sha in sorted(by_class[label])]
        n = len(groups)
        order = rng.permutation(n)
        # validation and test get their rounded share, and at least one image of every class
        # when they are asked for and the class has three or more; train gets the rest
        held = [max(1 if f > 0 and n >= 3 else 0, int(round(f * n))) for f in fractions[1:]]
        cuts = np.cumsum([n - sum(held)] + held[:-1])
        for k, chunk in enumerate(np.split(order, cuts)):
            for g in chunk:
                out[k].extend(groups[g])
    return [sorted(o) for o in out]


def _duplicates(index, split_of):
    groups = collections.defaultdict(list)
    for p, e in enumerate(index.entries):
        groups[e.sha256].append(p)
    report = []
    for sha, ps in sorted(groups.items()):
        if len(ps) < 2:
            continue
        splits = sorted({split_of.get(p, "-") for p in ps})
        classes = sorted({index.class_names[index.entries[p].label] for p in ps})
        kind = ("conflicting labels" if len(classes) > 1 else
                "leakage across splits" if len(splits) > 1 else "duplicate within a split")
        report.append(dict(sha256=sha, kind=kind, files=[index.entries[p].path for p in ps],
                           splits=splits, classes=classes))
    return report


def find_duplicates(index):
    """Identical files in ``index``, by the splits its folders give (or "all")."""
    return _duplicates(index, {p: e.split or "all" for p, e in enumerate(index.entries)})


def make_splits(index, fractions=DEFAULT_SPLIT, seed=0):
    """Assign every accepted entry of ``index`` to train, validation or test.

    With split folders, the folders decide; a missing ``validation/`` is carved from train
    (stratified, ``fractions[1]`` of it) and a missing ``test/`` stays empty.
    Without split folders, a stratified split by ``fractions`` with ``seed``.
    """
    if index.has_splits:
        given = {s: [p for p, e in enumerate(index.entries) if e.split == s] for s in SPLITS}
        origin = "folders"
        if not given["validation"]:
            share = fractions[1] / (fractions[0] + fractions[1])
            given["train"], given["validation"], _ = _stratified(index, given["train"], (1 - share, share, 0.0), seed)
            origin = "folders+carved validation"
        parts = [given[s] for s in SPLITS]
    else:
        parts = _stratified(index, range(len(index.entries)), fractions, seed)
        origin = "seeded stratified split"
    split_of = {p: s for s, ps in zip(SPLITS, parts) for p in ps}
    splits = Splits(*parts, duplicates=_duplicates(index, split_of), origin=origin)
    if not splits.train or not splits.validation:
        raise SmallvisionError(f"{index.root}: too few images to split ({len(index.entries)} usable; "
                               f"train={len(splits.train)}, validation={len(splits.validation)})")
    return splits
