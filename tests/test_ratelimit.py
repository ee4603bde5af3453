"""Token buckets and the per-socket limiter (gsc/core/ratelimit.py), driven by a fake clock."""

from gsc.core.ratelimit import RateLimiter, TokenBucket


def test_a_bucket_spends_its_burst_then_refills_at_its_rate():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(1, 0.05)          # half a token came back
    assert bucket.take(1, 0.1)               # one token a tenth of a second
    assert bucket.take(4, 10.0) and not bucket.take(2, 10.0)  # never more than the burst


def test_a_bucket_refuses_a_take_larger_than_it_holds_without_spending():
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert not bucket.take(101, 0.0)
    assert bucket.take(100, 0.0)


def test_the_limiter_counts_packets_and_bytes_and_tells_when_the_grace_is_over():
    limiter = RateLimiter(messages_per_second=2, bytes_per_second=1000, grace=1.0, now=0.0)
    assert limiter.packet_allowed(0.0) and limiter.packet_allowed(0.0)
    assert not limiter.packet_allowed(0.0) and limiter.refused == 1
    assert not limiter.overstayed(0.5)
    assert not limiter.packet_allowed(0.2)
    assert limiter.overstayed(1.0)
    assert limiter.packet_allowed(1.1) and limiter.overstayed(1.1)  # a pass soon after: still over
    assert limiter.packet_allowed(2.5) and not limiter.overstayed(3.5)  # a calm second ends it
    assert limiter.frame_allowed(1000, 4.0) and not limiter.frame_allowed(1, 4.0)


def test_no_limit_means_everything_passes():
    limiter = RateLimiter(None, None, grace=1.0, now=0.0)
    assert all(limiter.packet_allowed(0.0) and limiter.frame_allowed(10 ** 9, 0.0) for _ in range(1000))
    assert not limiter.overstayed(100.0)
