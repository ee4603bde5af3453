"""How long a big fan-out stalls a worker's other clients:
``python bench/fanout_stall.py [TREE ...] [--subscribers 3100] [--publishes 10]``.

For each gsc tree given (default: this one; give an older checkout to compare before and
after in one command), one worker (``TREE/bench/servers.py gsc``, its own session), then:

* the crowd (this script with ``--role crowd``, its own process, niced): SUBSCRIBERS raw
  WebSocket connections subscribed to one channel, plus one publisher connection. Plain
  sockets and epoll, so that reading 3,100 deliveries costs the crowd little;
* the rpc clients (``bench/echo_clients.py``, their own process): ``--clients`` connections
  emitting ``echo`` at ``--rate`` per second each, one in flight, latency per answer;
* rounds of a quiet window of ROUND seconds (the subscribers connected, nothing published)
  then a publishing window of ROUND publishes, one per second, each delivered to every
  subscriber; PUBLISHES in all, so PUBLISHES seconds of each kind. The windows alternate, so
  that the drift of a shared machine hits both alike.

It prints, per tree, the rpc latency p50/p99/max of both windows and the ratio of the publish
window's p99 to the quiet window's (goal: <= 1.5), and per publish the time until its ack and
until the last subscriber read it. 127.0.0.1 only; every process is stopped by its process
group, also on an error.
"""

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

sys.path.insert(0, os.path.join(ROOT, 'tests'))

from kit import (OP_TEXT, FrameReader, Processes, client_frame, emit_frame, free_port,  # noqa: E402
                 upgrade_answered, upgrade_request, wait_until)
from run_all import HOST, raise_nofile, wait_accepting  # noqa: E402

CHANNEL = 'stall'
SETUP_BATCH = 100
SETUP_TIMEOUT = 120.0
IO_TIMEOUT = 10.0
DRAIN_TIMEOUT = 5.0
READ_SIZE = 65536
# The crowd reads 3,100 deliveries in a burst of CPU: it yields the 2 cores to the worker and
# the rpc clients, so that their latency measures the worker's loop, not the crowd.
CROWD_NICENESS = 10


# -- the crowd: subscribers and the publisher, in their own process ---------------------


class Conn:
    """A raw client connection after its upgrade: its socket and unparsed input."""

    def __init__(self, port, subscribe):
        self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = upgrade_request(port) + emit_frame('#handshake', {}, 1)
        if subscribe:
            out += emit_frame('#subscribe', {'channel': CHANNEL}, 2)
        self.sock.sendall(out)
        self.buf = b''
        self.frames = FrameReader()
        self.wanted_rid = 2 if subscribe else 1
        self.upgraded = False

    def finish_setup(self):
        """Read until the upgrade and the last setup answer arrived (blocking, bounded)."""
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            data = self.sock.recv(READ_SIZE)
            if not data:
                raise RuntimeError('the server closed a connection during setup')
            if self.upgraded:
                self.frames.feed(data)
            else:
                self.buf += data
                rest = upgrade_answered(self.buf)
                if rest is None:
                    continue
                self.upgraded, self.buf = True, b''
                self.frames.feed(rest)
            for _opcode, payload in self.read_frames():
                if payload.startswith(b'{') and json.loads(payload).get('rid') == self.wanted_rid:
                    self.sock.setblocking(False)
                    return
        raise RuntimeError('no setup answer within %.0f s' % IO_TIMEOUT)

    def read_frames(self):
        """The complete frames received (the rest stays); pings are answered."""
        frames = self.frames.frames()
        for opcode, payload in frames:
            if opcode == OP_TEXT and payload == b'#1':
                self.sock.sendall(client_frame(b'#2'))
        return frames


def open_crowd(port, count):
    """``count`` subscribed connections, opened SETUP_BATCH at a time, and a publisher."""
    deadline = time.monotonic() + SETUP_TIMEOUT
    subscribers = []
    while len(subscribers) < count:
        if time.monotonic() > deadline:
            raise RuntimeError('only %d subscribers within %.0f s' % (len(subscribers), SETUP_TIMEOUT))
        batch = [Conn(port, True) for _ in range(min(SETUP_BATCH, count - len(subscribers)))]
        for conn in batch:
            conn.finish_setup()
        subscribers.extend(batch)
    publisher = Conn(port, False)
    publisher.finish_setup()
    return subscribers, publisher


def publish_index(payload):
    """The ``i`` of a delivery's data, or None when it is not a delivery."""
    at = payload.find(b'"i":')
    if not payload.startswith(b'{"event":"#publish"') or at < 0:
        return None
    end = at + 4
    while end < len(payload) and payload[end:end + 1].isdigit():
        end += 1
    return int(payload[at + 4:end])


class Crowd:
    """The crowd's event loop: reads every subscriber and the publisher, publishes on cue."""

    def __init__(self, subscribers, publisher, pad):
        self.subscribers = subscribers
        self.publisher = publisher
        self.pad = 'x' * pad
        self.poller = select.epoll()
        self.by_fd = {c.sock.fileno(): c for c in subscribers}
        for fd in self.by_fd:
            self.poller.register(fd, select.EPOLLIN)
        self.poller.register(publisher.sock.fileno(), select.EPOLLIN)
        self.sent, self.acked, self.first, self.last, self.count = {}, {}, {}, {}, {}

    def run(self, first, count):
        """Publish ``count`` times from index ``first``, one per second; then wait (bounded)
        for every delivery."""
        start = time.monotonic()
        indexes = range(first, first + count)
        done = 0
        drain_until = start + count + DRAIN_TIMEOUT
        while time.monotonic() < drain_until:
            now = time.monotonic()
            if done < count and now >= start + done:
                self.publish(first + done)
                done += 1
            elif now >= start + count and self.all_delivered(indexes):
                break
            wait = (start + done - now) if done < count else 0.05
            for fd, _ in self.poller.poll(max(0.0, min(wait, 0.05))):
                self.on_readable(fd)

    def publish(self, index):
        """One ``#publish`` of the publisher, cid = index + 10."""
        self.sent[index] = time.monotonic()
        self.publisher.sock.sendall(emit_frame('#publish', {
            'channel': CHANNEL, 'data': {'i': index, 's': self.pad}}, index + 10))

    def all_delivered(self, indexes):
        """True when every publish of ``indexes`` was acked and read by every subscriber."""
        return all(i in self.acked and self.count.get(i) == len(self.subscribers) for i in indexes)

    def on_readable(self, fd):
        """Read what one connection has: acks (publisher) or deliveries (subscribers)."""
        conn = self.by_fd.get(fd, self.publisher)
        try:
            data = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            raise RuntimeError('the server closed a connection')
        conn.frames.feed(data)
        now = time.monotonic()
        for _opcode, payload in conn.read_frames():
            if conn is self.publisher:
                if payload.startswith(b'{'):
                    rid = json.loads(payload).get('rid')
                    if rid is not None:
                        self.acked[rid - 10] = now
                continue
            index = publish_index(payload)
            if index is not None:
                self.count[index] = self.count.get(index, 0) + 1
                self.first.setdefault(index, now)
                self.last[index] = now

    def report(self, indexes):
        """One JSON line per publish: ack and first/last delivery in ms after the send."""
        for i in indexes:
            sent = self.sent.get(i)
            if sent is None:
                continue
            print(json.dumps({
                'publish': i, 'sent': sent,
                'ack_ms': _ms_after(self.acked.get(i), sent),
                'first_ms': _ms_after(self.first.get(i), sent),
                'last_ms': _ms_after(self.last.get(i), sent),
                'delivered': self.count.get(i, 0), 'subscribers': len(self.subscribers)}), flush=True)


def _ms_after(t, start):
    return None if t is None else round((t - start) * 1000, 1)


def crowd_main(args):
    """The crowd process: ``ready`` once subscribed; each ``publish N`` line on stdin
    publishes N times (one per second), then reports them and says ``done``; EOF ends it."""
    os.nice(CROWD_NICENESS)
    subscribers, publisher = open_crowd(args.port, args.subscribers)
    crowd = Crowd(subscribers, publisher, args.pad)
    print('ready', flush=True)
    first = 0
    for line in sys.stdin:
        count = int(line.split()[1])
        crowd.run(first, count)
        crowd.report(range(first, first + count))
        first += count
        print('done', flush=True)


# -- the parent: one tree after the other ---------------------------------------------------


class LineReader:
    """The stdout lines of a child, each waited for with a timeout."""

    def __init__(self, proc):
        self.fd = proc.stdout.fileno()
        self.buf = b''

    def next(self, timeout, what):
        """The next line within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b'\n' not in self.buf:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError('no %s within %.0f s' % (what, timeout))
            data = os.read(self.fd, 65536)
            if not data:
                raise RuntimeError('the process ended before %s' % what)
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return line.decode().strip()


def percentiles(samples):
    """p50, p99 and max of a list of latencies in ms (None when empty)."""
    if not samples:
        return {'n': 0, 'p50': None, 'p99': None, 'max': None}
    ordered = sorted(samples)
    pick = lambda p: ordered[min(len(ordered) - 1, int(p * len(ordered)))]  # noqa: E731
    return {'n': len(ordered), 'p50': pick(0.50), 'p99': pick(0.99), 'max': ordered[-1]}


def wait_for_line(path, text, timeout):
    """Wait until the file at ``path`` has the line ``text``."""
    def has_line():
        with open(path) as f:
            return any(line.strip() == text for line in f)
    wait_until(has_line, timeout, 0.1, 'no %r in %s within %.0f s' % (text, path, timeout))


def measure_tree(tree, args, log_path, echo_path):
    """The quiet and publish windows of one tree: a dict of figures."""
    procs = Processes(term_timeout=5)
    port = free_port()
    try:
        with open(log_path, 'w') as log:
            server = procs.start([sys.executable, os.path.join(tree, 'bench', 'servers.py'), 'gsc',
                                  '--port', str(port)], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log)
        wait_accepting(server, port)
        crowd = procs.start([sys.executable, os.path.abspath(__file__), '--role', 'crowd',
                             '--port', str(port), '--subscribers', str(args.subscribers),
                             '--publishes', str(args.publishes), '--pad', str(args.pad)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        crowd_lines = LineReader(crowd)
        crowd_lines.next(SETUP_TIMEOUT + 10, 'subscribers ready')
        window = args.publishes
        with open(echo_path, 'w') as echo_out:
            procs.start([sys.executable, os.path.join(HERE, 'echo_clients.py'), '--port', str(port),
                         '--clients', str(args.clients), '--rate', str(args.rate),
                         '--seconds', str(2 * window + DRAIN_TIMEOUT * len(rounds(window, args.round)) + 30)],
                        stdin=subprocess.DEVNULL, stdout=echo_out)
        wait_for_line(echo_path, 'ready', 30)
        time.sleep(1.0)  # let the rpc clients settle
        quiet, loud, publishes = [], [], []
        for count in rounds(args.publishes, args.round):
            quiet.append((time.monotonic(), time.monotonic() + count))
            time.sleep(count)
            crowd.stdin.write('publish %d\n' % count)
            crowd.stdin.flush()
            loud.append((time.monotonic(), time.monotonic() + count))
            while True:
                line = crowd_lines.next(count + DRAIN_TIMEOUT + 30, 'the publishes')
                if line == 'done':
                    break
                publishes.append(json.loads(line))
        if server.poll() is not None:
            raise RuntimeError('the server died; see %s' % log_path)
    finally:
        procs.stop()
    with open(echo_path) as f:
        samples = [line.split() for line in f]
    return {'quiet': window_stats(samples, quiet), 'publishing': window_stats(samples, loud),
            'publishes': publishes}


def rounds(publishes, per_round):
    """The publishes of each round: ``per_round`` each, the rest in the last."""
    return [min(per_round, publishes - done) for done in range(0, publishes, per_round)]


def window_stats(samples, windows):
    """Latency figures of the echo samples sent within one of ``windows`` (timeouts apart)."""
    def inside(sent):
        return any(start <= sent < end for start, end in windows)
    latencies = [float(s[2]) for s in samples if s[0] == 'sample' and inside(float(s[1]))]
    timeouts = sum(1 for s in samples if s[0] == 'timeout' and inside(float(s[1])))
    return dict(percentiles(latencies), timeouts=timeouts)


def fmt(value):
    """A figure for the table."""
    return '-' if value is None else ('%.1f' % value)


def print_report(tree, figures):
    """The table of one tree."""
    quiet, loud = figures['quiet'], figures['publishing']
    ratio = loud['p99'] / quiet['p99'] if quiet['p99'] and loud['p99'] else None
    print('\n## %s' % tree)
    print('| window | echoes | p50 ms | p99 ms | max ms | timeouts |')
    print('| --- | --- | --- | --- | --- | --- |')
    for name, w in (('quiet', quiet), ('publishing', loud)):
        print('| %s | %d | %s | %s | %s | %d |' % (name, w['n'], fmt(w['p50']), fmt(w['p99']),
                                                   fmt(w['max']), w['timeouts']))
    print('rpc p99 publishing / quiet: %s (goal <= 1.5)' % ('-' if ratio is None else '%.2f' % ratio))
    lasts = [p['last_ms'] for p in figures['publishes'] if p['last_ms'] is not None]
    missing = sum(p['subscribers'] - p['delivered'] for p in figures['publishes'])
    print('publishes: %d, ack ms median %s, last delivery ms median %s max %s, undelivered %d' % (
        len(figures['publishes']),
        fmt(percentiles([p['ack_ms'] for p in figures['publishes'] if p['ack_ms'] is not None])['p50']),
        fmt(percentiles(lasts)['p50']), fmt(max(lasts) if lasts else None), missing))
    return ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('trees', nargs='*', default=[ROOT], help='gsc checkouts to measure')
    parser.add_argument('--role', choices=('parent', 'crowd'), default='parent', help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--subscribers', type=int, default=3100)
    parser.add_argument('--publishes', type=int, default=10, help='publishes (one per second), '
                        'and the seconds of the quiet window')
    parser.add_argument('--round', type=int, default=2, help='publishes per round: quiet and '
                        'publishing windows alternate, ROUND seconds each, so drift hits both')
    parser.add_argument('--pad', type=int, default=100, help='bytes of padding in each publish')
    parser.add_argument('--clients', type=int, default=4, help='rpc clients')
    parser.add_argument('--rate', type=float, default=50.0, help='echo emits per second per rpc client')
    args = parser.parse_args()
    if args.role == 'crowd':
        crowd_main(args)
        return
    raise_nofile()
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    for n, tree in enumerate(args.trees):
        log_path = os.path.join(HERE, 'results', 'fanout_stall-%d.stderr.log' % n)
        echo_path = os.path.join(HERE, 'results', 'fanout_stall-%d-echo.log' % n)
        figures = measure_tree(os.path.abspath(tree), args, log_path, echo_path)
        print_report(tree, figures)
        with open(os.path.join(HERE, 'results', 'fanout_stall-%d.json' % n), 'w') as f:
            json.dump(dict(figures, tree=tree), f)


if __name__ == '__main__':
    main()
