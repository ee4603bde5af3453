"""Where the memory of an idle connection goes: ``python bench/idle_memory.py [--n N] [--trace]``.

One in-process gsc server (pings off) holds N idle handshaken connections opened by the Node
loadgen (``--scenario idle``, 127.0.0.1 only, bounded by N and its settle time).  Without
``--trace`` it prints the resident memory per connection (RSS delta / N; the kernel's socket
buffers are not in RSS).  With ``--trace`` it also starts tracemalloc before the connections
and prints the Python allocations per connection by source line, largest first (tracemalloc's
own bookkeeping inflates RSS then: read the traced figures).
"""

import argparse
import gc
import os
import subprocess
import sys
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import gevent  # noqa: E402

from gsc.server import listen  # noqa: E402

LOADGEN = os.path.join(HERE, 'loadgen', 'loadgen.js')
NO_PINGS = {'pingInterval': 3600 * 1000, 'pingTimeout': 7200 * 1000}
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=5000)
    parser.add_argument('--trace', action='store_true')
    parser.add_argument('--top', type=int, default=20)
    args = parser.parse_args()
    server = listen(0, NO_PINGS, host='127.0.0.1')
    gevent.sleep(0.5)
    gc.collect()
    if args.trace:
        tracemalloc.start(1)
        before_snapshot = tracemalloc.take_snapshot()
    before = rss()
    loadgen = hold(server, args.n, settle=15)
    connected = len(server.clients)
    print('%d connections: %.1f KiB RSS per connection' % (
        connected, (rss() - before) / 1024.0 / max(connected, 1)))
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
