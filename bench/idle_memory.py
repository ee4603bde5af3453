"""Where the memory of an idle connection goes: ``python bench/idle_memory.py [--n N] [--trace]``.

One in-process gsc server (pings off) holds N idle handshaken connections opened by the Node
loadgen (``--scenario idle``, 127.0.0.1 only, bounded by N and its settle time).  Without
``--trace`` it prints the resident memory per connection (RSS delta / N; the kernel's socket
buffers are not in RSS).  With ``--trace`` it also starts tracemalloc before the connections
and prints the Python allocations per connection by source line, largest first (tracemalloc's
own bookkeeping inflates RSS then: read the traced figures).

``--gc-pauses`` times the garbage collector instead (``gc.callbacks``): the generation-2
collections that ran while the N connections opened (count, longest) and then five full
collections with the N held (median, longest: the pause a gen2 collection costs at that size);
``--freeze`` first runs ``gsc.cluster.memory.freeze_startup_objects()`` as a worker does after its start.
"""

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import gevent  # noqa: E402

from gsc.cluster.memory import freeze_startup_objects  # noqa: E402
from gsc.server import listen  # noqa: E402

LOADGEN = os.path.join(HERE, 'loadgen', 'loadgen.js')
NO_PINGS = {'pingInterval': 3600 * 1000, 'pingTimeout': 7200 * 1000}
FULL_COLLECTIONS = 5
IDLE_SETTLE = 3.0
"""Seconds after the last handshake: an idle connection's reader greenlet is parked after one
or two sweeps of ``gsc.transport.IDLE_SWEEP_INTERVAL`` without input."""


def rss():
    """Resident memory of this process in bytes."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def hold(server, n, settle):
    """Open ``n`` idle connections with the loadgen; return when all are handshaken."""
    loadgen = subprocess.Popen(
        ['node', LOADGEN, '--url', 'ws://127.0.0.1:%d/socketcluster/' % server.port,
         '--scenario', 'idle', '--idle-n', str(n), '--concurrency', '100',
         '--settle', str(settle), '--pid', str(os.getpid())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with gevent.Timeout(120, False):
        while len(server.clients) < n and loadgen.poll() is None:
            gevent.sleep(0.1)
    gevent.sleep(IDLE_SETTLE)
    gc.collect()
    return loadgen


class GcTimer:
    """CPU time of the collections of one generation, from ``gc.callbacks`` (CPU, not wall
    time: a shared box descheduling the process does not count)."""

    def __init__(self, generation):
        self.generation = generation
        self.pauses = []
        self._started = None

    def __call__(self, phase, info):
        if info['generation'] != self.generation:
            return
        if phase == 'start':
            self._started = time.process_time()
        elif self._started is not None:
            self.pauses.append(time.process_time() - self._started)
            self._started = None

    def take(self):
        """The pauses so far (ms), forgotten."""
        pauses, self.pauses = [1000.0 * p for p in self.pauses], []
        return pauses


def report_gc_pauses(server, n, timer):
    """Print the gen2 pauses of the opening and of full collections with ``n`` held."""
    opening = timer.take()
    print('%d connections, %d objects tracked by gc, %d frozen' % (
        len(server.clients), len(gc.get_objects()), gc.get_freeze_count()))
    print('gen2 collections while opening: %d, longest %.1f ms'
          % (len(opening), max(opening, default=0.0)))
    for _ in range(FULL_COLLECTIONS):
        gc.collect()
    full = timer.take()
    print('full collections with the connections held: median %.1f ms, longest %.1f ms'
          % (statistics.median(full), max(full)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=5000)
    parser.add_argument('--trace', action='store_true')
    parser.add_argument('--top', type=int, default=20)
    parser.add_argument('--gc-pauses', action='store_true', help='time gen2 collections')
    parser.add_argument('--freeze', action='store_true', help='gc.freeze() after the start')
    args = parser.parse_args()
    server = listen(0, NO_PINGS, host='127.0.0.1')
    gevent.sleep(0.5)
    gc.collect()
    if args.freeze:
        freeze_startup_objects()
    timer = GcTimer(2)
    if args.gc_pauses:
        gc.callbacks.append(timer)
    if args.trace:
        tracemalloc.start(1)
        before_snapshot = tracemalloc.take_snapshot()
    before = rss()
    loadgen = hold(server, args.n, settle=15)
    connected = len(server.clients)
    print('%d connections: %.1f KiB RSS per connection' % (
        connected, (rss() - before) / 1024.0 / max(connected, 1)))
    if args.gc_pauses:
        report_gc_pauses(server, connected, timer)
    if args.trace:
        stats = tracemalloc.take_snapshot().compare_to(before_snapshot, 'lineno')
        total = sum(s.size_diff for s in stats)
        print('traced by Python: %.2f KiB per connection' % (total / 1024.0 / max(connected, 1)))
        for stat in stats[:args.top]:
            frame = stat.traceback[0]
            print('%7.0f B %6.1f blocks  %s:%d' % (stat.size_diff / connected,
                                                   stat.count_diff / connected,
                                                   os.path.relpath(frame.filename), frame.lineno))
    loadgen.kill()
    loadgen.wait()


if __name__ == '__main__':
    main()
