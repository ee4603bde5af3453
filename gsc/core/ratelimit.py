"""Per-socket inbound rate limits without I/O: token buckets for messages and bytes.

A :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate`` a second; an inbound
packet takes one message token and a frame takes its length in byte tokens.  A
:class:`RateLimiter` tells the socket whether a packet may pass and whether the socket has
been over its limits for longer than its grace (refused at least once every ``CALM`` seconds
all that time), when it is closed.  Time is
given by the caller (the event loop's clock), so tests drive it without waiting.
"""


CALM = 1.0
"""Seconds without a refusal after which a socket no longer counts as over its limits."""


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` kept; :meth:`take` spends them."""

    __slots__ = ('rate', 'burst', 'tokens', 'stamp')

    def __init__(self, rate, burst, now):
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, count, now):
        """Spend ``count`` tokens if there are that many (after refilling up to ``now``)."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < count:
            self.tokens = tokens
            return False
        self.tokens = tokens - count
        return True


class RateLimiter:
    """The inbound limits of one socket: messages and bytes a second (None: no limit), each
    with a burst of ``burst_seconds`` of its rate, and the ``grace`` (seconds) a socket may
    stay over them before it is closed."""

    __slots__ = ('messages', 'bytes', 'grace', 'over_since', 'last_refused', 'refused')

    def __init__(self, messages_per_second, bytes_per_second, grace, now, burst_seconds=1.0):
        self.messages = None if messages_per_second is None else TokenBucket(
            messages_per_second, max(messages_per_second * burst_seconds, 1), now)
        self.bytes = None if bytes_per_second is None else TokenBucket(
            bytes_per_second, max(bytes_per_second * burst_seconds, 1), now)
        self.grace = grace
        self.over_since = None
        self.last_refused = None
        self.refused = 0

    def frame_allowed(self, size, now):
        """True when a frame of ``size`` bytes is within the byte rate."""
        return self._outcome(self.bytes is None or self.bytes.take(size, now), now)

    def packet_allowed(self, now):
        """True when one more packet is within the message rate."""
        return self._outcome(self.messages is None or self.messages.take(1, now), now)

    def overstayed(self, now):
        """True once the socket has been over its limits for longer than ``grace``."""
        return self.over_since is not None and now - self.over_since >= self.grace

    def _outcome(self, allowed, now):
        if allowed:
            if self.over_since is not None and now - self.last_refused >= CALM:
                self.over_since = None
        else:
            self.refused += 1
            self.last_refused = now
            if self.over_since is None:
                self.over_since = now
        return allowed
