"""100,000 idle connections on one worker: ``python bench/many_idle.py [--n 100000] [--hold 30]``.

Issue 10 item 3. One standalone gsc worker (this script with ``--role server``, its own
session, pingInterval 10 s, pingTimeout 30 s, its open-files limit raised above N) and, in
this process, N raw WebSocket clients on plain non-blocking sockets and one epoll loop:

* the worker's RSS at the start (after a ``gc.collect()`` in the worker);
* N connections opened with ``#handshake``, at most ``--concurrency`` in progress at once,
  bound to the loopback source addresses 127.0.0.2, 127.0.0.3, ... (``--per-address`` each:
  the ephemeral port range allows ~28k connections per source address);
* held ``--hold`` seconds (2-3 ping intervals), every ``#1`` answered with ``#2``; for each
  connection the pings received and the largest gap between its handshake, its pings and the
  end of the hold (a gap above 1.5 pingInterval is a missed ping);
* the worker's RSS while held (per connection), then every connection closed; once the worker's
  open files are back to the start and its memory release ran (:mod:`gsc.cluster.memory`, checked
  every second here; ``--no-release`` turns it off to compare), ``gc.collect()`` in the worker,
  RSS again, and ``--later`` seconds after (the warnings digest's 10 s window over: its timer
  and what died since no longer pin memory); once more after ``malloc_trim(0)`` at the end, to
  tell the allocator's retained pages from live memory.  The worker starts as a worker does
  (``freeze_startup_objects()``, with ``prewarm_lazy_caches()``; ``--no-prewarm`` without).

Prints a Markdown table (goal: RSS after closing within 10% of the start). Every phase has a
timeout; the worker is stopped by its process group, also on an error. 127.0.0.0/8 only.
"""

import argparse
import errno
import gc
import json
import logging
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import arena_census  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, 'tests'))
from fanout_stall import LineReader  # noqa: E402
from kit import (OP_TEXT, FrameReader, Processes, client_frame, emit_frame, free_port,  # noqa: E402
                 upgrade_answered, upgrade_request)
from run_all import HOST, wait_accepting  # noqa: E402

PING_INTERVAL_MS = 10000
PING_TIMEOUT_MS = 30000
MISSED_GAP_FACTOR = 1.5
"""A gap between pings above this many pingIntervals means at least one ping was missed."""
SPARE_FILES = 1000
IP_BIND_ADDRESS_NO_PORT = 24
"""Linux: pick the source port at connect(), so that ports are unique per 4-tuple, not per
address alone."""
READ_SIZE = 4096
SETTLE = 3.0
CLOSE_TIMEOUT = 60.0
RELEASE_INTERVAL_MS = 1000
RELEASE_TIMEOUT = 30.0
PONG = client_frame(b'#2')


# -- the worker --------------------------------------------------------------------------


def raise_nofile_to(count):
    """Raise this process's open-files limit to ``count`` and return the soft limit reached:
    past the hard limit (up to /proc/sys/fs/nr_open) only with CAP_SYS_RESOURCE, else the
    soft limit is raised to the hard one."""
    with open('/proc/sys/fs/nr_open') as f:
        count = min(count, int(f.read()))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (count, max(hard, count)))
        except (ValueError, PermissionError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(args):
    """One gsc worker with short pings, sized for ``args.n`` connections; SIGUSR1 runs
    ``gc.collect()`` and prints a JSON line of live figures (sockets, Python memory blocks,
    objects tracked by gc; the first also writes the ``--types-file`` of ``--trace``), SIGUSR2
    runs ``malloc_trim(0)``."""
    import gevent
    from gsc.cluster import memory
    from gsc.cluster.memory import MemoryReleaser, freeze_startup_objects, malloc_trim
    from gsc.server import listen

    raise_nofile_to(args.n + SPARE_FILES)
    sc = listen(args.port, {'pingInterval': args.ping_interval, 'pingTimeout': PING_TIMEOUT_MS,
                            'maxConnections': args.n + SPARE_FILES // 2}, host=HOST)
    sc.on('error', lambda err: logging.error('server error: %r', err))
    if args.no_prewarm:
        memory.prewarm_lazy_caches = lambda: None
    freeze_startup_objects()  # as a worker does once ready
    releaser = MemoryReleaser(sc, {'memoryReleaseDrop': None if args.no_release else 1000,
                                   'memoryReleaseInterval': RELEASE_INTERVAL_MS}).start()

    def collect():
        gc.collect()
        if args.types_file and not os.path.exists(args.types_file):
            with open(args.types_file, 'w') as f:
                json.dump(arena_census.type_names(), f)
        print(json.dumps({'clients': len(sc.clients) + len(sc.pending_clients),
                          'blocks': sys.getallocatedblocks(), 'objects': len(gc.get_objects()),
                          'releases': releaser.releases, 'release_s': (releaser.last_release or [0])[0]}),
              flush=True)

    gevent.signal_handler(signal.SIGUSR1, collect)
    gevent.signal_handler(signal.SIGUSR2, malloc_trim)
    gevent.signal_handler(signal.SIGTERM, sys.exit, 0)
    gevent.wait()


# -- the clients ------------------------------------------------------------------------------


class Client:
    """One raw client connection: its socket, unparsed input and ping figures."""

    __slots__ = ('sock', 'buf', 'upgraded', 'handshaken', 'last', 'pings', 'max_gap')

    def __init__(self, source, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        err = self.sock.connect_ex((HOST, port))
        if err not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise OSError(err, os.strerror(err))
        self.buf = b''
        self.upgraded = self.handshaken = False
        self.last = None
        self.pings = 0
        self.max_gap = 0.0

    def on_input(self, data, now):
        """Take what the server sent: the upgrade, the handshake answer, pings (answered).
        ``buf`` is the bytes of the upgrade answer, then a FrameReader."""
        if self.upgraded:
            self.buf.feed(data)
        else:
            self.buf += data
            rest = upgrade_answered(self.buf)
            if rest is None:
                return
            self.upgraded, self.buf = True, FrameReader(rest)
        for opcode, payload in self.buf.frames():
            if opcode != OP_TEXT:
                continue
            if payload == b'#1':
                self.sock.send(PONG)
                self.tick(now)
                self.pings += 1
            elif not self.handshaken and payload.startswith(b'{') and json.loads(payload).get('rid') == 1:
                self.handshaken, self.last = True, now

    def tick(self, now):
        """Account the gap since the handshake or the previous ping."""
        if self.last is not None:
            self.max_gap = max(self.max_gap, now - self.last)
        self.last = now


class Crowd:
    """N clients in one epoll loop: opened with bounded concurrency, held, closed."""

    def __init__(self, port, args):
        self.port = port
        self.args = args
        self.poller = select.epoll()
        self.by_fd = {}
        self.opening = 0
        self.started = 0
        self.handshaken = 0
        self.failed = 0
        self.ended = 0

    def source(self):
        """The loopback source address of the next connection."""
        return '127.0.0.%d' % (2 + self.started // self.args.per_address)

    def start_one(self):
        """Begin one connection (its upgrade and #handshake are sent once connected)."""
        client = Client(self.source(), self.port)
        self.started += 1
        self.opening += 1
        self.by_fd[client.sock.fileno()] = client
        self.poller.register(client.sock.fileno(), select.EPOLLOUT)

    def open_all(self, timeout):
        """Open N connections; return once all are handshaken or failed (raise past
        ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.handshaken + self.failed < self.args.n:
            if time.monotonic() > deadline:
                raise RuntimeError('%d of %d handshaken within %.0f s'
                                   % (self.handshaken, self.args.n, timeout))
            while self.opening < self.args.concurrency and self.started < self.args.n:
                self.start_one()
            self.poll(0.05)

    def hold(self, seconds):
        """Answer pings for ``seconds``."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.poll(min(0.1, max(0.0, until - time.monotonic())))

    def poll(self, timeout):
        """One round of the event loop."""
        for fd, events in self.poller.poll(timeout):
            client = self.by_fd.get(fd)
            if client is None:
                continue
            if events & select.EPOLLOUT:
                self.on_connected(fd, client)
            elif events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                self.on_readable(fd, client)

    def on_connected(self, fd, client):
        """Send the upgrade and the #handshake, then wait for input."""
        err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.drop(fd, client, failed=True)
            return
        client.sock.send(upgrade_request(self.port) + emit_frame('#handshake', {}, 1))
        self.poller.modify(fd, select.EPOLLIN)

    def on_readable(self, fd, client):
        """Read one connection."""
        try:
            data = client.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:
            self.drop(fd, client, failed=not client.handshaken)
            return
        was_handshaken = client.handshaken
        client.on_input(data, time.monotonic())
        if client.handshaken and not was_handshaken:
            self.handshaken += 1
            self.opening -= 1

    def drop(self, fd, client, failed):
        """Forget a connection that failed to open or that the server ended."""
        self.poller.unregister(fd)
        del self.by_fd[fd]
        client.sock.close()
        if failed:
            self.failed += 1
            self.opening -= 1
        else:
            self.ended += 1

    def ping_figures(self, now):
        """Pings per connection and missed pings (the gap until ``now`` counted too)."""
        interval = self.args.ping_interval / 1000.0
        gaps, pings = [], []
        for client in self.by_fd.values():
            if client.handshaken:
                gaps.append(max(client.max_gap, now - client.last))
                pings.append(client.pings)
        missed = sum(1 for gap in gaps if gap > MISSED_GAP_FACTOR * interval)
        return {'held': len(gaps), 'pings_min': min(pings, default=0),
                'pings_max': max(pings, default=0), 'missed': missed,
                'max_gap_s': round(max(gaps, default=0.0), 2), 'ended_by_server': self.ended}

    def close_all(self):
        """Close every connection."""
        for client in self.by_fd.values():
            client.sock.close()
        self.by_fd.clear()
        self.poller.close()


# -- the parent ----------------------------------------------------------------------------------


def rss(pid):
    """Resident memory of ``pid`` in bytes."""
    with open('/proc/%d/statm' % pid) as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def open_files(pid):
    """How many files ``pid`` has open."""
    return len(os.listdir('/proc/%d/fd' % pid))


def collect(server, lines):
    """``gc.collect()`` in the worker, SETTLE seconds, then its RSS and live figures."""
    os.kill(server.pid, signal.SIGUSR1)
    live = json.loads(lines.next(SETTLE + 10, 'the gc figures'))
    time.sleep(SETTLE)
    return dict(live, rss=rss(server.pid))


def wait_release(server, lines, releases, timeout):
    """Wait until the worker ran more than ``releases`` memory releases; return the seconds
    the last one took."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(server.pid, signal.SIGUSR1)
        live = json.loads(lines.next(SETTLE + 10, 'the gc figures'))
        if live['releases'] > releases:
            return live['release_s']
        time.sleep(0.5)
    raise RuntimeError('no memory release within %.0f s' % timeout)


def wait_files(pid, count, timeout):
    """Wait until the worker has at most ``count`` open files; return the seconds taken."""
    start = time.monotonic()
    while open_files(pid) > count:
        if time.monotonic() - start > timeout:
            raise RuntimeError('the worker still has %d files open after %.0f s'
                               % (open_files(pid), timeout))
        time.sleep(0.2)
    return time.monotonic() - start


def check_limit(n):
    """Raise the open-files limit for ``n`` connections, or exit saying what is missing."""
    limit = raise_nofile_to(n + SPARE_FILES)
    if limit < n + SPARE_FILES:
        raise SystemExit('--n %d needs %d open files per process, the limit is %d: raise the hard '
                         'limit (ulimit -Hn, or run with CAP_SYS_RESOURCE) or lower --n to %d'
                         % (n, n + SPARE_FILES, limit, limit - SPARE_FILES))


def measure_round(server, lines, port, args, releases, census=None):
    """Open, hold and close N connections once; a dict of figures."""
    files_start = open_files(server.pid)
    crowd = Crowd(port, args)
    started = time.monotonic()
    crowd.open_all(args.open_timeout)
    figures = {'open_s': round(time.monotonic() - started, 1), 'handshaken': crowd.handshaken,
               'failed': crowd.failed}
    crowd.hold(SETTLE)
    figures['rss_held'] = rss(server.pid)
    crowd.hold(args.hold)
    figures.update(crowd.ping_figures(time.monotonic()))
    if server.poll() is not None:
        raise RuntimeError('the worker died')
    crowd.close_all()
    figures['close_s'] = round(wait_files(server.pid, files_start, CLOSE_TIMEOUT), 1)
    if not args.no_release:
        figures['release_s'] = wait_release(server, lines, releases, RELEASE_TIMEOUT)
    figures['closed'] = collect(server, lines)
    time.sleep(args.later)
    figures['closed_later'] = collect(server, lines)
    if census is not None:
        figures['census'] = census()
    return figures


def measure(args, log_path):
    """Run the scenario; a dict of figures."""
    check_limit(args.n)
    if args.trace and not arena_census.supported():
        raise SystemExit('--trace reads CPython 3.10-3.12 pools on 64-bit Linux only')
    procs = Processes(term_timeout=5)
    port = free_port()
    types_file = os.path.join(HERE, 'results', 'many_idle.types.json')
    if os.path.exists(types_file):
        os.unlink(types_file)
    try:
        with open(log_path, 'w') as log:
            server = procs.start([sys.executable, os.path.abspath(__file__), '--role', 'server',
                                  '--port', str(port), '--n', str(args.n),
                                  '--ping-interval', str(args.ping_interval)]
                                 + (['--no-release'] if args.no_release else [])
                                 + (['--no-prewarm'] if args.no_prewarm else [])
                                 + (['--types-file', types_file] if args.trace else []),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                 cwd=ROOT)
        lines = LineReader(server)
        wait_accepting(server, port)
        time.sleep(1.0)
        figures = {'n': args.n, 'start': collect(server, lines), 'rounds': []}
        census = None
        if args.trace:
            baseline = arena_census.anonymous_ranges(server.pid)
            with open(types_file) as f:
                names = {int(key): name for key, name in json.load(f).items()}
            census = lambda: arena_census.report(server.pid, baseline, names)  # noqa: E731
        for number in range(args.rounds):
            figures['rounds'].append(measure_round(server, lines, port, args, number, census))
        os.kill(server.pid, signal.SIGUSR2)
        time.sleep(1.0)
        figures['rss_trimmed'] = rss(server.pid)
    finally:
        procs.stop()
    return figures


def mib(value):
    """Bytes as MiB for the table."""
    return '%.1f' % (value / 1048576.0)


def versus(value, start):
    """``value`` as a change from ``start`` in percent."""
    return '%+.1f%%' % (100.0 * (value - start) / start)


def round_rows(f, start, args):
    """The table rows of one round."""
    held = max(f['handshaken'], 1)
    closed = f['closed']
    return [
        ('connections handshaken / asked', '%d / %d (%d failed), in %.1f s'
         % (f['handshaken'], args.n, f['failed'], f['open_s'])),
        ('worker RSS held', '%s MiB (%.1f KiB per connection)'
         % (mib(f['rss_held']), (f['rss_held'] - start['rss']) / 1024.0 / held)),
        ('pings per connection in %.0f s held (pingInterval %d ms)' % (args.hold + SETTLE, args.ping_interval),
         '%d..%d' % (f['pings_min'], f['pings_max'])),
        ('connections that missed a ping (gap > %.1f x pingInterval)' % MISSED_GAP_FACTOR,
         '%d of %d' % (f['missed'], f['held'])),
        ('largest gap between pings', '%.2f s (%.2f x pingInterval)'
         % (f['max_gap_s'], f['max_gap_s'] * 1000.0 / args.ping_interval)),
        ('connections the server ended while held', '%d' % f['ended_by_server']),
        ('worker files back to the start after closing', 'in %.1f s' % f['close_s']),
        ('memory release after closing (gsc.cluster.memory)', 'off' if args.no_release
         else 'ran, in %.0f ms' % (1000.0 * f['release_s'])),
        ('worker RSS after closing + gc.collect()', '%s MiB (%s of the start, goal <= +10%%)'
         % (mib(closed['rss']), versus(closed['rss'], start['rss']))),
        ('worker RSS %.0f s later' % (args.later + SETTLE), '%s MiB (%s of the start)'
         % (mib(f['closed_later']['rss']), versus(f['closed_later']['rss'], start['rss']))),
        ('worker live Python blocks / gc objects / sockets after closing', '%d / %d / %d (start %d / %d / %d)'
         % (closed['blocks'], closed['objects'], closed['clients'],
            start['blocks'], start['objects'], start['clients'])),
    ]


def print_report(f, args):
    """The Markdown table of one run."""
    start = f['start']
    print('| %d idle connections, one worker | |' % args.n)
    print('| --- | --- |')
    print('| worker RSS at start | %s MiB |' % mib(start['rss']))
    for number, figures in enumerate(f['rounds'], 1):
        for name, value in round_rows(figures, start, args):
            print('| round %d: %s | %s |' % (number, name, value))
    print('| after malloc_trim(0) | %s MiB (%s of the start) |'
          % (mib(f['rss_trimmed']), versus(f['rss_trimmed'], start['rss'])))
    for number, figures in enumerate(f['rounds'], 1):
        if 'census' in figures:
            print('\nRound %d, %.0f s after closing: ' % (number, args.later + SETTLE)
                  + '\n'.join(figures['census']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--role', choices=('parent', 'server'), default='parent', help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--n', type=int, default=100000, help='connections')
    parser.add_argument('--hold', type=float, default=30.0, help='seconds held after all are open')
    parser.add_argument('--ping-interval', type=int, default=PING_INTERVAL_MS, help='ms')
    parser.add_argument('--rounds', type=int, default=2,
                        help='open-hold-close rounds on the same worker (a leak grows each round)')
    parser.add_argument('--no-release', action='store_true',
                        help="without gsc.cluster.memory's release after many connections closed")
    parser.add_argument('--later', type=float, default=15.0,
                        help='seconds between the RSS after closing and the RSS "later"')
    parser.add_argument('--no-prewarm', action='store_true',
                        help="without gsc.cluster.memory.prewarm_lazy_caches() at the worker's start")
    parser.add_argument('--types-file', help=argparse.SUPPRESS)
    parser.add_argument('--trace', action='store_true',
                        help='after each round, the live blocks that keep the memory mapped since the '
                             'start (bench/arena_census.py: read from outside, RSS unchanged)')
    parser.add_argument('--concurrency', type=int, default=200, help='connections opening at once')
    parser.add_argument('--per-address', type=int, default=20000, help='connections per source address')
    parser.add_argument('--open-timeout', type=float, default=None,
                        help='seconds to open all (default 60 + N / 250)')
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(name)s %(levelname)s %(message)s')
    if args.role == 'server':
        serve(args)
        return
    if args.open_timeout is None:
        args.open_timeout = 60 + args.n / 250.0
    if args.n > args.per_address * 250:
        parser.error('too many connections for 127.0.0.2-127.0.0.251')
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    figures = measure(args, os.path.join(HERE, 'results', 'many_idle.stderr.log'))
    print_report(figures, args)
    with open(os.path.join(HERE, 'results', 'many_idle.json'), 'w') as f:
        json.dump(figures, f)


if __name__ == '__main__':
    main()
