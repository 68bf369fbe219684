import random

import pytest

from helper.workload.backoff import Backoff, workload_api_backoff


def test_delays_double_up_to_the_cap_without_jitter():
    b = Backoff(initial=1, cap=30, factor=2, jitter=0)
    assert [b.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_reset_starts_over():
    b = Backoff(initial=1, cap=30, factor=2, jitter=0)
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.next_delay() == 1


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_bounds_and_below_cap(seed):
    b = Backoff(initial=1, cap=30, factor=2, jitter=0.2, rng=random.Random(seed))
    for n in range(12):
        d = b.next_delay()
        base = min(30, 2**n)
        assert base * 0.8 <= d <= min(30, base * 1.2)


def test_workload_api_policy_is_about_one_second_to_thirty():
    b = workload_api_backoff()
    first = b.next_delay()
    assert 0.8 <= first <= 1.2
    for _ in range(20):
        last = b.next_delay()
    assert 24 <= last <= 30


def test_many_attempts_do_not_overflow():
    b = Backoff(initial=1, cap=30, factor=2, jitter=0)
    b.attempts = 10_000
    assert b.next_delay() == 30
