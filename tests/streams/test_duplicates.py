from dataclasses import replace

import numpy as np
import pytest

from clflow.config import StreamConfig
from clflow.errors import StreamError
from clflow.streams import Split, build_stream
from clflow.streams.duplicates import apply_policy, leaked_rows, repeat_mask


@pytest.fixture(scope="module")
def recurring():
    """Permuted digits A B A: task 0's test rows appear under experiences 0 and 2."""
    return build_stream(StreamConfig(source="permuted_digits", experiences=2, tasks=[0, 1, 0]))


def with_repeats(split: Split, rows: list[int]) -> Split:
    idx = np.concatenate([np.arange(len(split)), np.asarray(rows, dtype=np.int64)])
    return Split(split.X[idx], split.y[idx], split.experience[idx], split.task[idx])


def test_recurring_test_rows_are_not_duplicates(recurring):
    t0 = recurring.test.experience == 0
    assert np.array_equal(recurring.test.X[t0], recurring.test.X[recurring.test.experience == 2])
    assert not repeat_mask(recurring.test, by_experience=True).any()
    assert (
        repeat_mask(recurring.test).sum() == t0.sum()
    )  # the same rows, keyed without the experience
    _, report = apply_policy(recurring, "error", "here")  # nothing to refuse
    assert report.train == report.test == report.test_in_train == 0


def test_policies_keep_drop_error(recurring):
    stream = replace(recurring, train=with_repeats(recurring.train, [3, 3, 10]))
    kept, report = apply_policy(stream, "keep", "here")
    assert report.train == 3 and len(kept.train) == len(stream.train)
    dropped, report = apply_policy(stream, "drop", "here")
    assert report.dropped == 3 and len(dropped.train) == len(recurring.train)
    assert not repeat_mask(dropped.train).any()
    with pytest.raises(
        StreamError, match=r"^here: field 'x': 3 duplicate rows \(train split, first at row"
    ):
        apply_policy(stream, "error", "here")


def test_drop_that_empties_an_experience_stops(recurring):
    train = recurring.train
    last = train.experience == 2
    copy = Split(
        train.X[last], train.y[last], train.experience[last] * 0, train.task[last]
    )  # exp 2 == exp 0 rows
    stream = replace(
        recurring,
        train=Split(
            *(
                np.concatenate([a, b])
                for a, b in zip(
                    (copy.X, copy.y, copy.experience, copy.task),
                    (train.X, train.y, train.experience, train.task),
                )
            )
        ),
    )
    with pytest.raises(StreamError, match="leaves experience 2 with no train rows"):
        apply_policy(stream, "drop", "here")


def test_leakage_is_counted(recurring, caplog):
    test = recurring.test
    train = recurring.train
    leaky = Split(
        np.concatenate([train.X, test.X[:7]]),
        np.concatenate([train.y, test.y[:7]]),
        np.concatenate([train.experience, test.experience[:7]]),
        np.concatenate([train.task, test.task[:7]]),
    )
    assert leaked_rows(recurring.train, test) == 0
    # the 7 rows belong to task 0, whose test rows recur under experience 2: 14 test rows leak
    assert leaked_rows(leaky, test) == 14
    _, report = apply_policy(replace(recurring, train=leaky), "keep", "here")
    assert report.test_in_train == 14 and "leakage" in caplog.text
