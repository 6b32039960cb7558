from collections import Counter

import pytest

from bench.config import SeedSetConfig
from bench.errors import BenchError
from bench.seed_set import sample_seed_set
from bench.tasks import load_task
from tests.conftest import typed_config


@pytest.fixture(scope="module")
def trec(data_dir):
    return load_task(typed_config("task=trec").task, str(data_dir))


def ids(examples):
    return [example.id for example in examples]


def test_reproducible_from_task_size_and_seed(trec):
    first = sample_seed_set(trec.train, SeedSetConfig(size=100, seed=3), "trec")
    assert ids(first) == ids(sample_seed_set(trec.train, SeedSetConfig(size=100, seed=3), "trec"))
    assert ids(first) != ids(sample_seed_set(trec.train, SeedSetConfig(size=100, seed=4), "trec"))
    assert len(set(ids(first))) == 100


def test_seed_sets_come_from_the_training_split_only(trec):
    chosen = sample_seed_set(trec.train, SeedSetConfig(fraction=1.0), "trec")
    assert len(chosen) == len(trec.train)
    assert all(i.startswith("train-") for i in ids(chosen))
    assert not {e.prompt for e in chosen} & {e.prompt for e in trec.test}


def test_fraction_rounds_down_as_the_llm2llm_authors(trec):
    assert len(trec.train) == 5442  # 1% is 54.42, 5% 272.1, 2% 108.84: int() keeps 54, 272 and 108
    assert [len(sample_seed_set(trec.train, SeedSetConfig(fraction=f), "trec")) for f in (0.01, 0.05, 0.02)] \
        == [54, 272, 108]


def test_stratified_keeps_label_shares(trec):
    chosen = sample_seed_set(trec.train, SeedSetConfig(size=200, stratify=True), "trec")
    assert len(chosen) == 200
    pool = Counter(e.label for e in trec.train)
    got = Counter(e.label for e in chosen)
    for label, count in pool.items():
        assert abs(got[label] - 200 * count / len(trec.train)) < 1  # largest-remainder rounding


@pytest.mark.parametrize("settings, message", [
    ({"size": 0}, "seed_set.size=0 must be a positive number"),
    ({"size": -5}, "seed_set.size=-5 must be a positive number"),
    ({"fraction": 1.5}, r"seed_set.fraction=1.5 must be in \(0, 1\]"),
    ({"size": 10, "fraction": 0.1}, "set one of them, the other to null"),
])
def test_bad_sizes_fail_in_the_schema(settings, message):
    with pytest.raises(BenchError, match=message):
        SeedSetConfig(**settings)


def test_a_size_beyond_the_pool(trec):
    with pytest.raises(BenchError, match="seed_set.size=100000 exceeds the 5442 training examples of trec"):
        sample_seed_set(trec.train, SeedSetConfig(size=100000), "trec")


def test_no_size_and_no_fraction_is_the_whole_split(trec):
    assert len(sample_seed_set(trec.train, SeedSetConfig(), "trec")) == len(trec.train)  # |S| = full
