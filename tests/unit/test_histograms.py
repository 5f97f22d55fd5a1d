from kpod_agent.histograms import log2_to_buckets


def test_cumulative_buckets_and_inf() -> None:
    slots = [1, 0, 2, 3] + [0] * 27 + [4]  # last slot: beyond range
    buckets = log2_to_buckets(slots, 1e-9)
    assert buckets[0] == (repr(1e-9), 1.0)
    assert buckets[2] == (repr(4e-9), 3.0)
    assert buckets[3] == (repr(8e-9), 6.0)
    assert buckets[-2][1] == 6.0  # overflow slot only in +Inf
    assert buckets[-1] == ("+Inf", 10.0)
    les = [float(le) for le, _ in buckets[:-1]]
    assert les == sorted(les)


def test_range_drops_buckets_but_keeps_counts() -> None:
    slots = [5, 1, 1, 1] + [0] * 28
    buckets = log2_to_buckets(slots, 1.0, min_le=2.0, max_le=4.0)
    assert buckets == [("2.0", 6.0), ("4.0", 7.0), ("+Inf", 8.0)]
