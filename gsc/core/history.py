"""Channel history: which channels keep their publications, and the bounded log that keeps them.

Sans-I/O.  :class:`HistoryRules` reads the ``channelHistory`` option (fnmatch patterns ->
policies) and ``maxHistoryBytes``; :class:`HistoryStore` is the in-memory log of one owner
(a broker process, or a standalone worker): per channel an ``offset`` (1 for the first
publication, +1 per publication) and an ``epoch`` (a short random string, new whenever the
channel's history is created again: a new store, an eviction, or the ttl emptying it).
The wire contract is in docs/history.md.
"""

import collections
import secrets
import time

from . import codec
from .protocol import UNDEFINED, defined
from ..errors import BrokerError, InvalidArgumentsError, InvalidOptionsError
from .checks import is_int, is_number
from .patterns import ChannelRules

HistoryPolicy = collections.namedtuple('HistoryPolicy', 'size ttl max_bytes publish_offsets')
"""What one channel keeps: ``size`` publications, each for ``ttl`` seconds, ``max_bytes`` of
JSON in all; ``publish_offsets`` wraps what clients receive as ``{data, offset, epoch}``."""

POLICY_DEFAULTS = {'size': 100, 'ttl': 300, 'maxBytes': 1024 * 1024, 'publishOffsets': False}
POLICY_BOUNDS = {'size': (1, 10000), 'ttl': (0.001, 7 * 86400), 'maxBytes': (1, 32 * 1024 * 1024)}
"""The range of each numeric policy key (``maxBytes`` stays well below what a link carries)."""
DEFAULT_MAX_HISTORY_BYTES = 64 * 1024 * 1024
CHANNEL_OVERHEAD = 256
"""Bytes counted against ``maxHistoryBytes`` for each channel's log on top of its JSON, so
that many empty logs (reads of never-published channels) are bounded too."""
ENTRY_OVERHEAD = 64
"""Bytes counted against ``maxHistoryBytes`` for each publication on top of its JSON."""


def no_history(channel):
    """The BrokerError of a history read on a channel no ``channelHistory`` pattern matches."""
    return BrokerError('Channel %s has no history (no channelHistory pattern matches it)'
                       % channel[:200])


def new_epoch():
    """A short random epoch (8 hex characters)."""
    return secrets.token_hex(4)


class HistoryRules(ChannelRules):
    """The ``channelHistory`` option compiled (:class:`gsc.core.patterns.ChannelRules`):
    ``policy(channel)`` is a :class:`HistoryPolicy` or None.  ``max_history_bytes`` is
    ``maxHistoryBytes``.  A bad option raises InvalidOptionsError."""

    option_name = 'channelHistory'
    defaults = POLICY_DEFAULTS

    def __init__(self, option=None, max_history_bytes=None):
        if max_history_bytes is None:
            max_history_bytes = DEFAULT_MAX_HISTORY_BYTES
        if not is_int(max_history_bytes) or max_history_bytes < 1:
            raise InvalidOptionsError('The maxHistoryBytes option must be a positive whole number '
                                      'of bytes, not %r' % (max_history_bytes,))
        self.max_history_bytes = max_history_bytes
        ChannelRules.__init__(self, option)

    def make_policy(self, pattern, settings):
        """The :class:`HistoryPolicy` of one pattern's settings."""
        for key, (low, high) in POLICY_BOUNDS.items():
            value = settings[key]
            if not is_number(value) or not low <= value <= high:
                raise self.invalid(pattern, '%r.%s must be a number from %s to %s, not %r'
                                   % (pattern, key, low, high, value))
            if key != 'ttl' and value != int(value):
                raise self.invalid(pattern, '%r.%s must be a whole number, not %r' % (pattern, key, value))
        if not isinstance(settings['publishOffsets'], bool):
            raise self.invalid(pattern, '%r.publishOffsets must be true or false, not %r'
                               % (pattern, settings['publishOffsets']))
        return HistoryPolicy(int(settings['size']), settings['ttl'], int(settings['maxBytes']),
                             settings['publishOffsets'])

    @classmethod
    def from_options(cls, options):
        """The rules of ``channelHistory`` and ``maxHistoryBytes`` in ``options`` (either spelling)."""
        options = options or {}
        return cls(_option(options, 'channelHistory', 'channel_history'),
                   _option(options, 'maxHistoryBytes', 'max_history_bytes'))


def _option(options, camel, snake):
    value = options.get(camel)
    return options.get(snake) if value is None else value


class ChannelLog:
    """One channel's kept publications: ``epoch``, ``offset`` (the latest), ``entries``
    (deque of ``(offset, data, bytes, time)``), ``bytes`` (their JSON), ``touched`` (time)."""

    __slots__ = ('epoch', 'offset', 'entries', 'bytes', 'touched')

    def __init__(self, now):
        self.epoch = new_epoch()
        self.offset = 0
        self.entries = collections.deque()
        self.bytes = 0
        self.touched = now

    def first_kept(self):
        """The offset of the oldest kept publication (``offset + 1`` when none is kept)."""
        return self.entries[0][0] if self.entries else self.offset + 1


class HistoryStore:
    """The bounded history of every channel one owner keeps.

    ``append(channel, data)`` -> ``(offset, epoch)`` (None without a policy);
    ``read(channel, since, epoch, limit)`` -> the result dict of the contract;
    ``purge_expired()`` drops what the ttl expired.  ``bytes`` counts JSON plus overheads over
    all channels; past ``rules.max_history_bytes`` the least recently published channel's
    whole log is dropped (its epoch changes).
    """

    def __init__(self, rules, clock=time.monotonic):
        self.rules = rules
        self.clock = clock
        self.bytes = 0
        self._logs = collections.OrderedDict()  # channel -> ChannelLog, least recently touched first

    def __len__(self):
        return len(self._logs)

    def append(self, channel, data):
        """Keep ``data`` as the next publication of ``channel``; its ``(offset, epoch)``, or None
        when the channel has no history.  ``data`` must be JSON-encodable (ValueError) or
        ``UNDEFINED`` (a publication without data: kept without it)."""
        policy = self.rules.policy(channel)
        if policy is None:
            return None
        size = 0 if data is UNDEFINED else len(codec.encode(data).encode('utf-8'))
        now = self.clock()
        log = self._log(channel, policy, now)
        log.offset += 1
        log.touched = now
        self._logs.move_to_end(channel)
        log.entries.append((log.offset, data, size, now))
        log.bytes += size
        self.bytes += size + ENTRY_OVERHEAD
        self._trim(log, policy)
        position = (log.offset, log.epoch)
        self._evict(channel)
        return position

    def read(self, channel, since=None, epoch=None, limit=None):
        """``{'epoch', 'offset', 'publications': [{'offset', 'data'}], 'recovered'}``: after
        ``since`` (with ``epoch``), or the last ``limit``; BrokerError without a policy."""
        policy, since, epoch, limit = read_request(self.rules, channel, since, epoch, limit)
        log = self._log(channel, policy, self.clock())
        entries = log.entries
        if since is None:
            picked = list(entries)[max(0, len(entries) - limit):] if limit else []
            recovered = True
        else:
            recovered = epoch == log.epoch and log.first_kept() - 1 <= since <= log.offset
            picked = [e for e in entries if e[0] > since][:limit] if recovered else []
        return {'epoch': log.epoch, 'offset': log.offset, 'recovered': recovered,
                'publications': [defined(offset=e[0], data=e[1]) for e in picked]}

    def purge_expired(self):
        """Drop the publications older than their ttl; a log left empty for a ttl is dropped
        (the channel's next history has a new epoch)."""
        now = self.clock()
        for channel, log in list(self._logs.items()):
            policy = self.rules.policy(channel)
            if policy is None:
                self._drop(channel)
                continue
            self._expire(log, policy, now)
            if not log.entries and now - log.touched >= policy.ttl:
                self._drop(channel)

    def _log(self, channel, policy, now):
        """The log of ``channel``, trimmed by its ttl; a new one (a new epoch) when it has none
        or the ttl emptied it."""
        log = self._logs.get(channel)
        if log is not None:
            self._expire(log, policy, now)
            if log.entries or now - log.touched < policy.ttl:
                return log
            self._drop(channel)
        self.bytes += CHANNEL_OVERHEAD
        self._evict(None)
        log = self._logs[channel] = ChannelLog(now)
        # first in line for eviction until something is published on it: reads of many
        # unpublished channels evict one another before any channel's publications
        self._logs.move_to_end(channel, last=False)
        return log

    def _expire(self, log, policy, now):
        entries = log.entries
        while entries and now - entries[0][3] >= policy.ttl:
            self._pop_oldest(log)

    def _trim(self, log, policy):
        while len(log.entries) > policy.size or log.bytes > policy.max_bytes:
            self._pop_oldest(log)

    def _pop_oldest(self, log):
        size = log.entries.popleft()[2]
        log.bytes -= size
        self.bytes -= size + ENTRY_OVERHEAD

    def _drop(self, channel):
        log = self._logs.pop(channel)
        self.bytes -= log.bytes + len(log.entries) * ENTRY_OVERHEAD + CHANNEL_OVERHEAD

    def _evict(self, keep):
        """Past ``maxHistoryBytes``: drop the least recently published logs other than ``keep``,
        then ``keep``'s own oldest publications."""
        limit = self.rules.max_history_bytes
        logs = self._logs
        while self.bytes > limit:
            oldest = next((channel for channel in logs if channel != keep), None)
            if oldest is None:
                break
            self._drop(oldest)
        log = logs.get(keep)
        while self.bytes > limit and log is not None and log.entries:
            self._pop_oldest(log)


def read_request(rules, channel, since, epoch, limit):
    """A history read of ``channel`` checked: ``(policy, since, epoch, limit)`` with ``limit``
    at most the policy's size (its size when None).  The channel must have a policy of
    ``rules`` (else :func:`no_history`), ``since`` be None or an int >= 0, ``epoch`` a string
    (or None without since) and ``limit`` None or an int >= 0 (else InvalidArgumentsError)."""
    policy = rules.policy(channel)
    if policy is None:
        raise no_history(channel)
    if since is not None and (not is_int(since) or since < 0):
        raise InvalidArgumentsError('History since must be a whole number >= 0, not %r' % (since,))
    if since is not None and not isinstance(epoch, str):
        raise InvalidArgumentsError('History since needs the epoch it was seen in (a string), '
                                    'not %r' % (epoch,))
    if limit is not None and (not is_int(limit) or limit < 0):
        raise InvalidArgumentsError('History limit must be a whole number >= 0, not %r' % (limit,))
    return policy, since, epoch, policy.size if limit is None else min(limit, policy.size)


MAX_EPOCH_LENGTH = 64
HOLD_LIMIT = 10000
"""Live publications one socket holds for one channel while it recovers; past it the recovery
fails (``recovered: false``) rather than hold more."""


def recovery_request(data, policy):
    """What a subscribe's ``data`` asks of ``policy``'s channel: ``(since, epoch, limit)`` for
    ``{'recover': {'offset', 'epoch'}}`` or ``{'history': N}``, None when it asks nothing or the
    channel has no history; InvalidArgumentsError when the request is malformed."""
    if policy is None or not isinstance(data, dict):
        return None
    if 'recover' in data:
        recover = data['recover']
        offset = recover.get('offset') if isinstance(recover, dict) else None
        epoch = recover.get('epoch') if isinstance(recover, dict) else None
        if not is_int(offset) or offset < 0 or \
                not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH:
            raise InvalidArgumentsError('recover must be {offset: a whole number >= 0, epoch: a string '
                                        'of at most %d characters}' % MAX_EPOCH_LENGTH)
        return offset, epoch, None
    if 'history' in data:
        count = data['history']
        if not is_int(count) or not 0 <= count <= policy.size:
            raise InvalidArgumentsError('history must be a whole number from 0 to %d (the size of '
                                        'this channel\'s history)' % policy.size)
        return None, None, count
    return None


class RecoveryGate:
    """One socket's passage for one channel with history: while the socket recovers, live
    publications are held; afterwards each publication passes once, in offset order.
    ``epoch``, ``offset`` (the last passed), ``held`` (a list while recovering, else None),
    ``overflowed`` (more than :data:`HOLD_LIMIT` arrived while recovering)."""

    __slots__ = ('epoch', 'offset', 'held', 'overflowed')

    def __init__(self):
        self.epoch = None
        self.offset = 0
        self.held = []
        self.overflowed = False

    def passes(self, item, offset, epoch):
        """True when ``item`` (a publication at ``offset`` of ``epoch``) is to be written now;
        False when it is held or was already written."""
        if self.held is not None:
            if len(self.held) < HOLD_LIMIT:
                self.held.append(item)
            else:
                self.overflowed = True
            return False
        if epoch == self.epoch and offset <= self.offset:
            return False
        self.epoch, self.offset = epoch, offset
        return True

    def release(self, epoch, offset):
        """End the holding: what follows passes when after ``offset`` of ``epoch`` (or of another
        epoch); returns the held items, in arrival order."""
        held, self.held = self.held, None
        self.epoch, self.offset = epoch, offset
        return held

    def hold(self):
        """Hold again (from the position already passed); the new hold list, which identifies
        this holding."""
        self.held = []
        self.overflowed = False
        return self.held


def lost_report(channel, err=None, result=None, overflowed=False):
    """The ``#recovery`` data of a gap that history could not fill: ``recovered`` False,
    ``missed`` 0, and ``epoch``/``offset`` of ``result`` (None with an ``error`` text when the
    read failed or too many live publications arrived meanwhile)."""
    if err is None and not overflowed:
        return {'channel': channel, 'recovered': False, 'epoch': result['epoch'],
                'offset': result['offset'], 'missed': 0}
    return {'channel': channel, 'recovered': False, 'epoch': None, 'offset': None, 'missed': 0,
            'error': str(err) if err else 'too many live publications arrived during the recovery'}


class ChannelPositions:
    """Where an engine stands in each history channel it delivers to its worker, and the
    resync of those channels after the engine lost its link (a broker or Redis restart).

    ``deliver(channel, data, (offset, epoch))`` receives each publication once, in offset
    order; ``report(channel, lost_report)`` a gap that history could not fill.  Each tracked
    channel has a :class:`RecoveryGate` (its ``epoch``/``offset``: the last delivered).  A
    resync: :meth:`hold` when the link is back, before subscribing again; once subscribed, the
    history reads :meth:`first_read` then :meth:`next_read` (the whole new epoch when it
    changed); :meth:`finish` delivers what the reads returned then the live publications held
    meanwhile, without those already delivered.
    """

    def __init__(self, deliver, report):
        self.deliver = deliver
        self.report = report
        self._gates = {}  # channel -> RecoveryGate

    def __contains__(self, channel):
        return channel in self._gates

    def track(self, channel):
        """Deliver ``channel`` through a gate from now on (a channel with history)."""
        if channel not in self._gates:
            gate = self._gates[channel] = RecoveryGate()
            gate.release(None, 0)

    def forget(self, channel):
        """Stop tracking ``channel`` (unsubscribed)."""
        self._gates.pop(channel, None)

    def message(self, channel, data, position):
        """A live publication at ``position`` ``(offset, epoch)``: delivered now, held during a
        resync, or dropped when already delivered."""
        gate = self._gates.get(channel)
        if gate is None or gate.passes((data, position), *position):
            self.deliver(channel, data, position)

    def hold(self, channel):
        """Start the resync of ``channel``: its token (for :meth:`finish`), None when it is not
        tracked."""
        gate = self._gates.get(channel)
        return None if gate is None else gate.hold()

    def first_read(self, channel):
        """``(since, epoch)`` of the first history read of a resync: from the last delivered
        publication (from the start of whichever epoch the owner has when none was)."""
        gate = self._gates[channel]
        return gate.offset, gate.epoch or ''

    def resync(self, channel, token, read):
        """Read what ``channel`` missed with ``read(since, epoch, callback)`` (``callback(err,
        result)``, at once or later): from :meth:`first_read`, then the owner's whole epoch when
        it is another one (:meth:`next_read`); then :meth:`finish` the resync ``token``."""
        def step(since, epoch):
            def answered(err, result):
                following = None if err else self.next_read(epoch, result)
                if following is None:
                    self.finish(channel, token, err, result)
                else:
                    step(*following)
            read(since, epoch, answered)
        step(*self.first_read(channel))

    @staticmethod
    def next_read(asked_epoch, result):
        """``(since, epoch)`` of the read after ``result`` (of a read asked in ``asked_epoch``):
        the whole epoch of the owner when it is another one; None when ``result`` is the last."""
        if result['epoch'] != asked_epoch:
            return 0, result['epoch']
        return None

    def finish(self, channel, token, err=None, result=None):
        """End the resync ``token`` of ``channel``: the publications of ``result`` (the last
        read), then the held ones, each delivered once in order; a ``report`` when the read
        failed (``err``), history no longer held the gap, or the hold overflowed.  Nothing
        happens for a stale token (the channel was forgotten or held again since)."""
        gate = self._gates.get(channel)
        if gate is None or gate.held is not token:
            return
        overflowed = gate.overflowed
        held = gate.release(gate.epoch, gate.offset)
        lost = err is not None or overflowed or not result['recovered']
        if not lost:
            epoch = result['epoch']
            for publication in result['publications']:
                self.message(channel, publication.get('data', UNDEFINED), (publication['offset'], epoch))
        for data, position in held:
            self.message(channel, data, position)
        if lost:
            self.report(channel, lost_report(channel, err, result, overflowed))
