"""on_cmd_exit = "restart": the pure backoff and give-up policy, on a fake clock."""

from __future__ import annotations

from helper.supervise.restart_policy import RestartPolicy


def crash_loop(policy: RestartPolicy, uptime: float, limit: int = 100) -> list[float | None]:
    """Delays the policy gives a child that always crashes after `uptime` seconds."""
    now = 0.0
    delays: list[float | None] = []
    for _ in range(limit):
        started = now
        now += uptime
        delay = policy.after_exit(started=started, ended=now)
        delays.append(delay)
        if delay is None:
            return delays
        now += delay
    return delays


def test_delays_double_from_1_s_to_30_s_and_it_gives_up_at_the_10th_crash_in_5_minutes():
    delays = crash_loop(RestartPolicy(), uptime=0.1)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30, 30, None]


def test_a_child_that_stayed_up_60_s_starts_again_from_1_s():
    policy = RestartPolicy()
    assert [policy.after_exit(started=t, ended=t + 1) for t in (0, 10, 20)] == [1, 2, 4]
    assert policy.after_exit(started=100, ended=160) == 1  # up 60 s: healthy again
    assert policy.after_exit(started=170, ended=171) == 2


def test_a_child_that_crashes_slowly_is_restarted_forever():
    # one crash every 34 s: at most 9 in any 5 minutes
    policy = RestartPolicy(initial=0, cap=0)
    assert None not in crash_loop(policy, uptime=34, limit=1000)


def test_ten_crashes_inside_the_window_give_up_even_when_spread_out():
    # one crash every 33 s: the 10th comes 297 s after the 1st
    policy = RestartPolicy(initial=0, cap=0)
    delays = crash_loop(policy, uptime=33)
    assert len(delays) == 10
    assert delays[-1] is None
    assert policy.recent_crashes == 10


def test_crashes_older_than_the_window_are_forgotten():
    policy = RestartPolicy()
    for t in range(9):
        assert policy.after_exit(started=t, ended=t + 0.5) is not None
    assert policy.recent_crashes == 9
    assert policy.after_exit(started=400, ended=400.5) is not None  # the first 9 are old
    assert policy.recent_crashes == 1


def test_the_parameters_can_be_changed_in_code():
    policy = RestartPolicy(initial=0.05, cap=0.2, max_crashes=4)
    assert crash_loop(policy, uptime=0.01) == [0.05, 0.1, 0.2, None]
