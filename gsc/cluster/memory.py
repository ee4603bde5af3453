"""Memory given back after many connections closed, and the worker's start-up objects frozen.

After a mass close (a reconnect storm, a deploy) the process kept most of the peak's memory:
a closed connection is cyclic garbage until a full collection; pymalloc unmaps an arena
(1 MiB) only when every block in it is free, and CPython's type attribute cache holds a strong
reference to up to 4,096 attribute names, names built per connection among them, one here and
there in every arena of the peak; glibc keeps freed heap pages.  :func:`release_memory` clears
that cache, runs a full ``gc.collect()`` and glibc's ``malloc_trim(0)``.  It costs a full
collection, so it runs only when the worker lost many connections: :class:`ReleasePolicy`
decides (sans I/O), :class:`MemoryReleaser` checks the connection count on a timer (never in a
connection's path).  docs/idle-memory.md has the analysis and the figures.

Options (of the cluster, in :mod:`gsc.core.options`): ``memoryReleaseDrop`` (the
connections closed since the last peak that trigger a release once the count stopped falling,
also at least ``RELEASE_FRACTION`` of that peak; None turns it off) and
``memoryReleaseInterval`` (ms between two checks, so also the least time between two releases).
"""

import collections.abc
import ctypes
from array import array
import gc
import logging
import os
import resource
import sys
import time

import gevent
from gevent import socket as gsocket

from ..core.options import BY_NAME

log = logging.getLogger(__name__)

RELEASE_FRACTION = 0.1
"""A release needs the drop to be at least this part of the peak too: a large worker whose
count moves by ``memoryReleaseDrop`` around a steady level is not collected every interval."""


class ReleasePolicy:
    """When to give memory back: the connection count fell by ``drop`` (and by
    ``RELEASE_FRACTION`` of the peak) since the highest count seen after the last release, and
    stopped falling (the closes of a storm are over, their memory is free).  Feed it the count
    at each check with :meth:`observe`."""

    def __init__(self, drop):
        self.drop = drop
        self.peak = 0
        self.previous = 0

    def observe(self, count):
        """True when a release is due now (the peak then starts again from ``count``)."""
        falling, self.previous = count < self.previous, count
        self.peak = max(self.peak, count)
        fallen = self.peak - count
        if (self.drop is None or falling or fallen < self.drop
                or fallen < RELEASE_FRACTION * self.peak):
            return False
        self.peak = count
        return True


def _glibc_malloc_trim():
    """glibc's ``malloc_trim``, or None on another C library."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _glibc_malloc_trim()


def malloc_trim():
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim(0)``); False
    on another C library."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def resident_bytes():
    """Resident memory of this process in bytes (its peak where /proc is not there)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_memory():
    """Clear the type attribute cache, collect every generation, then ``malloc_trim(0)``
    (glibc only); return ``(seconds taken, resident bytes before, after)``."""
    started = time.monotonic()
    before = resident_bytes()
    clear_type_cache = getattr(sys, '_clear_type_cache', None)
    if clear_type_cache is not None:
        clear_type_cache()
    gc.collect()
    malloc_trim()
    return time.monotonic() - started, before, resident_bytes()


class _Prewarm(Exception):
    """Thrown into a greenlet of :func:`prewarm_lazy_caches` that waits in ``recv``."""


def prewarm_lazy_caches():
    """Make now the one-time caches that a storm of connections would otherwise fill at its
    peak: a block allocated then lands in the arenas of the peak, and a few such blocks keep
    those arenas (1 MiB each) after every connection closed.  Two kinds were found
    (docs/idle-memory.md): the ABC caches behind logging's ``isinstance(args[0], Mapping)``,
    which get a weak reference per exception class logged as a single argument, and the
    code objects Cython caches for a traceback through gevent's wait, made the first time an
    exception is thrown into a greenlet waiting in ``recv`` (an idle reader parked, or its
    socket closed under it: the same frames).  Run it once the imports and the controller
    are done: an ABC registration after it makes the ABC caches stale again."""
    for cls in _subclasses(BaseException):
        issubclass(cls, collections.abc.Mapping)
    near, far = gsocket.socketpair()
    try:
        reader = gevent.spawn(_wait_in_recv, near)
        gevent.sleep(0)
        reader.kill(_Prewarm, block=True, timeout=1)
    finally:
        near.close()
        far.close()


def _wait_in_recv(sock):
    try:
        sock.recv(1)
    except _Prewarm:
        pass


def _subclasses(cls):
    """Every class derived from ``cls``, once each."""
    seen, stack = set(), [cls]
    while stack:
        for sub in type.__subclasses__(stack.pop()):
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    return seen


def freeze_startup_objects():
    """Fill the lazy caches (:func:`prewarm_lazy_caches`), then move every object alive now
    into the permanent generation (``gc.freeze()``), after a collection: later full
    collections no longer traverse the start-up objects (modules, classes, the controller's
    state), which shortens their pauses."""
    prewarm_lazy_caches()
    gc.collect()
    gc.freeze()
    log.debug('gc.freeze(): %d start-up objects frozen', gc.get_freeze_count())


def _option(options, name):
    """``options[name]``, the registry's default when absent."""
    return options.get(name, BY_NAME[name].default)


class MemoryReleaser:
    """Checks a server's connection count every ``memoryReleaseInterval`` ms and runs
    :func:`release_memory` when its :class:`ReleasePolicy` says so.  ``releases`` counts the
    releases run; ``last_release`` holds ``seconds, rss before, rss after`` of the last (an
    ``array('d')``: int objects made during a release would keep the arenas it freed)."""

    def __init__(self, server, options):
        self.server = server
        self.interval = _option(options, 'memoryReleaseInterval') / 1000.0
        self.policy = ReleasePolicy(_option(options, 'memoryReleaseDrop'))
        self.releases = 0
        self.last_release = None
        self._greenlet = None

    def start(self):
        """Start checking (a no-op when ``memoryReleaseDrop`` is None)."""
        if self.policy.drop is not None and self._greenlet is None:
            self._greenlet = gevent.spawn(self._check_forever)
        return self

    def stop(self):
        """Stop checking."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def check(self):
        """Release now if the count fell enough since its peak; True when it did."""
        server = self.server
        if not self.policy.observe(server.clients_count + server.pending_clients_count):
            return False
        self.last_release = array('d', release_memory())
        self.releases += 1
        seconds, before, after = self.last_release
        log.debug('Memory released after closed connections in %.3f s: RSS %d -> %d bytes',
                  seconds, before, after)
        return True

    def _check_forever(self):
        while True:
            gevent.sleep(self.interval)
            self.check()
