"""Rate-limited reporting of the warnings a client can cause at will.

A hostile client makes a worker emit a warning with every frame it sends (a ``#subscribe``
before the handshake, a publish to a channel that is not a string, ...).  Reporting each
one (a log line, or a message to the master over two IPC hops) would cost the worker more
than the frame that caused it.  A :class:`WarningDigest` reports the first warning of a
kind at once, counts the others, and reports at most one summary per kind per interval:
"N more <kind> warnings in the last 10 s".
"""

import logging

from gevent import get_hub

from .errors import SCError, error_name

log = logging.getLogger(__name__)

SUMMARY_INTERVAL = 10.0
"""Seconds between two reports of one kind of warning."""
MAX_KINDS = 64
"""Kinds counted apart; warnings of further kinds are counted together as 'Warning'."""


def warning_kind(warning):
    """The name a warning is counted under: its SocketCluster name, else its type's name."""
    return error_name(warning) or type(warning).__name__


def summary_warning(kind, count, interval):
    """The warning that stands for ``count`` warnings of ``kind`` held back for ``interval`` s."""
    return SCError('%d more %s warnings in the last %g s' % (count, kind, interval),
                   name=kind, count=count)


class WarningDigest:
    """Calls ``report(warning)`` for the first warning of each kind, then once per
    ``interval`` seconds with a :func:`summary_warning` while warnings of that kind go on.

    Attributes: ``interval``; ``held`` (kind -> warnings counted since its last report).
    """

    def __init__(self, report, interval=SUMMARY_INTERVAL):
        self.report = report
        self.interval = interval
        self.held = {}
        self._timers = {}

    def add(self, warning):
        """Count ``warning``; report it at once when its kind is quiet."""
        kind = warning_kind(warning)
        if kind not in self.held and len(self.held) >= MAX_KINDS:
            kind = 'Warning'
        held = self.held.get(kind)
        if held is not None:
            self.held[kind] = held + 1
            return
        self.held[kind] = 0
        self._start_timer(kind)
        self.report(warning)

    def close(self):
        """Stop every timer (what is held back is dropped)."""
        for timer in self._timers.values():
            timer.close()
        self._timers.clear()
        self.held.clear()

    def _start_timer(self, kind):
        timer = get_hub().loop.timer(self.interval, ref=False)
        self._timers[kind] = timer
        timer.start(self._summarise, kind)

    def _summarise(self, kind):
        """The end of an interval: a summary if warnings were held back, else the kind is quiet."""
        self._timers.pop(kind).close()
        count = self.held.pop(kind, 0)
        if not count:
            return
        self.held[kind] = 0
        self._start_timer(kind)
        try:
            self.report(summary_warning(kind, count, self.interval))
        except Exception:  # runs in the hub: a failing report must not take the loop down
            log.exception('reporting %d %s warnings failed', count, kind)
