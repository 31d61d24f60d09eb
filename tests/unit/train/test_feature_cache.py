from __future__ import annotations

from pathlib import Path

import numpy as np

from mlaas4hep.train.feature_cache import CachingSource

from .fakes import FakeSource


def train_X(source: object, seed: int = 0) -> list[np.ndarray]:
    return [b.X for b in source.batches("train", shuffle=True, seed=seed)]  # type: ignore[attr-defined]


def test_second_pass_reads_the_cache_with_the_same_events(tmp_path: Path) -> None:
    fake = FakeSource(events=4000)
    cached = CachingSource(fake, tmp_path / "features", max_bytes=10**9)
    first = train_X(cached, seed=1)
    calls = len(fake.calls)
    second = train_X(cached, seed=2)
    assert len(fake.calls) == calls  # the fake source was not read again
    assert sorted(x.tobytes() for x in first) == sorted(x.tobytes() for x in second)
    assert train_X(cached, seed=2)[0].tobytes() == second[0].tobytes()  # seeded order


def test_other_splits_are_never_cached(tmp_path: Path) -> None:
    fake = FakeSource(events=2000)
    cached = CachingSource(fake, tmp_path / "features", max_bytes=10**9)
    list(cached.batches("test"))
    assert not (tmp_path / "features").exists()


def test_an_interrupted_pass_leaves_no_cache(tmp_path: Path) -> None:
    cached = CachingSource(FakeSource(events=4000), tmp_path / "features", max_bytes=10**9)
    it = cached.batches("train")
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []


def test_a_split_over_budget_streams_every_time(tmp_path: Path) -> None:
    fake = FakeSource(events=4000)
    cached = CachingSource(fake, tmp_path / "features", max_bytes=10_000)
    assert len(train_X(cached)) == 4
    assert list(tmp_path.iterdir()) == []
    train_X(cached)
    assert fake.calls.count("batches:train") == 2
