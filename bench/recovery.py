"""Recovery after kill -9 under pub/sub load: how long until every subscriber receives again.

    npm ci --prefix bench/loadgen && npm ci --prefix bench/socketcluster
    .venv/bin/python bench/recovery.py [--server gsc|sc] [--kills 10] [--subs 200] [--pubs 10]

One cluster of 2 workers + 1 broker (gsc: ``run.py`` as in bench/cluster.py; sc: SocketCluster
14.4.2, bench/socketcluster/server.js) and, in another process, the clients of
``recovery_clients.js``: ``--subs`` subscribers on one channel and ``--pubs`` publishers
publishing ``--rate`` times a second each; every client reconnects (``--retry-ms`` doubling to
``--retry-max-ms``, with jitter) and resubscribes when it loses its connection. Then
``--kills`` kill -9s, alternately of a worker (alternately worker 0 and 1) and of the broker,
``--settle`` s apart. Per kill:

* every subscriber's time from the kill to its first delivery of a message published after
  the kill (the max over subscribers is the headline; p50 beside it; missing = none within
  ``--window`` s);
* when the replacement process appeared (a new child pid) and when it listened: a new listening
  socket in its file descriptors (gsc's workers: the TCP port; brokers: their unix socket), or,
  for SocketCluster's workers (whose listening socket stays in Node's cluster master), their
  'bench worker listening' log line.

Prints a markdown table and writes bench/results/recovery-latest.json (server log beside it).
The clients and the cluster share the machine's cores; quote the load average with the figures.
127.0.0.1 only; every wait is bounded; every process tree is stopped by process group.
"""

import argparse
import datetime
import json
import os
import queue
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time

import cluster  # noqa: I001 (puts tests/ on sys.path, for kit)
from kit import start_process, stop_process

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')
CLIENTS = os.path.join(HERE, 'recovery_clients.js')
POLL = 0.005
READY_TIMEOUT = 40.0
SC_LISTENING = 'bench worker listening pid '
TCP_LISTEN = '0A'
UNIX_LISTENING_FLAGS = '00010000'


def raise_nofile():
    """Raise the soft open-files limit to the hard one (inherited by the servers and clients)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def child_pids(pid):
    """The children of ``pid`` (its main thread's /proc children list)."""
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pid):
    """User + system CPU seconds used so far by process ``pid``."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def tree_roles(master):
    """(worker cluster pid, worker pids, broker pids): the master's child that has children is
    the worker cluster, its other children are brokers."""
    worker_cluster, brokers = None, []
    for pid in child_pids(master):
        if child_pids(pid):
            worker_cluster = pid
        else:
            brokers.append(pid)
    return worker_cluster, (child_pids(worker_cluster) if worker_cluster else []), brokers


def socket_inodes(pid):
    """Inodes of the sockets among ``pid``'s open file descriptors."""
    inodes = set()
    try:
        names = os.listdir('/proc/%d/fd' % pid)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink('/proc/%d/fd/%s' % (pid, name))
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
    return inodes


def listening_inodes(port):
    """Inodes of listening sockets: TCP on ``port`` and every listening unix socket."""
    found = set()
    with open('/proc/net/tcp') as f:
        for row in f.readlines()[1:]:
            cols = row.split()
            if cols[1].endswith(':%04X' % port) and cols[3] == TCP_LISTEN:
                found.add(cols[9])
    with open('/proc/net/unix') as f:
        for row in f.readlines()[1:]:
            cols = row.split()
            if cols[3] == UNIX_LISTENING_FLAGS:
                found.add(cols[6])
    return found


def start_server(stack, kind, port, log_path, workers=2):
    """A cluster of ``kind`` with ``workers`` workers and 1 broker on ``port`` (its Tree), once
    every worker has answered (so the clients spread over all of them)."""
    if kind == 'gsc':
        tree = cluster.start_cluster(stack, port, log_path, workers=workers, brokers=1)
    else:
        tree = cluster.start_socketcluster(stack, port, log_path, workers=workers)
    cluster.wait_serving(tree, port)
    seen = set()
    deadline = time.monotonic() + READY_TIMEOUT
    while len(seen) < workers and time.monotonic() < deadline:
        try:
            seen.add(cluster.probe(port, [('pid', None)])[1])
        except (OSError, ValueError):
            time.sleep(0.01)
    if len(seen) < workers:
        raise RuntimeError('only workers %s answered within %.0f s' % (sorted(seen), READY_TIMEOUT))
    return tree


class Clients:
    """The recovery_clients.js process: commands on its stdin, its JSON lines in a queue."""

    def __init__(self, args, port, log_path):
        cmd = ['node', CLIENTS, '--url', 'ws://127.0.0.1:%d/socketcluster/' % port,
               '--subs', str(args.subs), '--pubs', str(args.pubs), '--rate', str(args.rate),
               '--retry-ms', str(args.retry_ms), '--retry-max-ms', str(args.retry_max_ms),
               '--window', str(args.window), '--cap', str(args.kills * (args.window + args.settle + 15) + 120)]
        self._stderr = open(log_path, 'w')
        self.proc = start_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self._stderr, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith('{'):
                self.lines.put(json.loads(line))

    def send(self, command):
        self.proc.stdin.write(command + '\n')
        self.proc.stdin.flush()

    def next(self, kind, timeout):
        """The next JSON line of type ``kind`` (RuntimeError on a fatal line or a timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.get('type') == kind:
                return line
            if line.get('type') == 'fatal':
                raise RuntimeError('clients: %s' % line)
        raise RuntimeError('clients: no %r line within %.0f s' % (kind, timeout))

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.send('stop')
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)
        self._stderr.close()


def wait_replacement(tree, port, by_log_line, parent, before, listening_before, t0, window):
    """Seconds from ``t0`` until a new child of ``parent`` appeared and until it listened
    (None when not within ``window``); and its pid. It listens when a new listening socket is
    among its file descriptors or, ``by_log_line``, when it logged SC_LISTENING."""
    spawned = listened = new_pid = None
    while time.monotonic() - t0 < window and listened is None:
        if new_pid is None:
            fresh = [pid for pid in child_pids(parent) if pid not in before]
            if fresh:
                new_pid, spawned = fresh[0], time.monotonic() - t0
        if new_pid is not None:
            if by_log_line:
                when = tree.first_line(SC_LISTENING + str(new_pid))
                listened = when - t0 if when else None
            else:
                new_inodes = (listening_inodes(port) - listening_before) & socket_inodes(new_pid)
                listened = time.monotonic() - t0 if new_inodes else None
        if listened is None:
            time.sleep(POLL)
    return spawned, listened, new_pid


def kill_once(tree, port, clients, args, label, target):
    """kill -9 one worker or the broker; the figures of that kill."""
    worker_cluster, workers, brokers = tree_roles(tree.pid)
    if len(workers) != 2 or len(brokers) != 1:
        raise RuntimeError('expected 2 workers and 1 broker, found %s and %s' % (workers, brokers))
    victim, parent = (workers[target], worker_cluster) if label == 'worker' else (brokers[0], tree.pid)
    before = child_pids(parent)
    listening_before = listening_inodes(port)
    t0_ns = time.monotonic_ns()
    t0 = t0_ns / 1e9
    os.kill(victim, signal.SIGKILL)
    clients.send('kill %s %d' % (label, t0_ns))
    by_log_line = args.server == 'sc' and label == 'worker'
    spawned, listened, new_pid = wait_replacement(tree, port, by_log_line, parent, before,
                                                  listening_before, t0, args.window)
    result = clients.next('kill', args.window + 10)
    result.update({'victim': victim, 'new_pid': new_pid,
                   'spawn_ms': round(spawned * 1000, 1) if spawned is not None else None,
                   'listen_ms': round(listened * 1000, 1) if listened is not None else None})
    return result


def run(args):
    """Start the cluster and the clients, kill ``args.kills`` times: (the list of results, the
    server log's path, the clients' CPU % of a core over the kills)."""
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    log_path = os.path.join(RESULTS, 'recovery-%s-%s.stderr.log' % (args.server, stamp))
    stack = cluster.Stack()
    clients = clients_cpu = None
    results = []
    try:
        port = cluster.free_port()
        tree = start_server(stack, args.server, port, log_path)
        clients = Clients(args, port, log_path.replace('.stderr.log', '-clients.stderr.log'))
        ready = clients.next('ready', READY_TIMEOUT)
        if not ready['ok']:
            raise RuntimeError('clients not ready: %s' % ready)
        time.sleep(args.settle)
        cpu0, t0 = cpu_seconds(clients.proc.pid), time.monotonic()
        for k in range(args.kills):
            label = 'worker' if k % 2 == 0 else 'broker'
            results.append(kill_once(tree, port, clients, args, label, (k // 2) % 2))
            results[-1]['kill'] = k + 1
            print_progress(results[-1])
            if tree.poll() is not None:
                raise RuntimeError('the master exited with code %s' % tree.poll())
            time.sleep(args.settle)
        clients_cpu = round(100 * (cpu_seconds(clients.proc.pid) - cpu0) / (time.monotonic() - t0))
    except RuntimeError as err:
        results.append({'fatal': str(err)})
        print('fatal: %s' % err, flush=True)
    finally:
        if clients is not None:
            clients.stop()
        stack.stop()
    return results, os.path.relpath(log_path, HERE), clients_cpu


def print_progress(result):
    """One progress line per kill."""
    print('  kill %d (%s): every subscriber again after %s ms, listening after %s ms' % (
        result['kill'], result['label'], result.get('max_ms'), result.get('listen_ms')), flush=True)


def fmt(value):
    """A figure for the table, '-' when missing."""
    return '-' if value is None else '{:,.0f}'.format(value)


def aggregate(rows, key, agg):
    """``agg`` (median, max) of ``key`` over ``rows`` that have it, formatted."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return fmt(agg(values)) if values else '-'


def table(results):
    """The markdown table: one row per kill, then the median and max per kind of kill."""
    out = ['| kill | process | every subscriber again, ms (max) | p50 ms | missing | respawned ms | '
           'listening ms | disconnects | failed connects | publish errors |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    ok = [r for r in results if not r.get('fatal')]
    for r in ok:
        out.append('| %d | %s | %s | %s | %d | %s | %s | %d | %d | %d |' % (
            r['kill'], r['label'], fmt(r['max_ms']), fmt(r['p50_ms']), r['missing'], fmt(r['spawn_ms']),
            fmt(r['listen_ms']), r['disconnects'], r['connect_failures'], r['publish_errors']))
    for label in ('worker', 'broker'):
        rows = [r for r in ok if r['label'] == label]
        for name, agg in (('median', statistics.median), ('max', max)):
            if rows:
                out.append('| %s | %s | %s | %s | %d | %s | %s | | | |' % (
                    name, label, aggregate(rows, 'max_ms', agg), aggregate(rows, 'p50_ms', agg),
                    sum(r['missing'] for r in rows), aggregate(rows, 'spawn_ms', agg),
                    aggregate(rows, 'listen_ms', agg)))
    return '\n'.join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--server', choices=('gsc', 'sc'), default='gsc')
    parser.add_argument('--kills', type=int, default=10, help='kill -9s, worker and broker alternately')
    parser.add_argument('--subs', type=int, default=200)
    parser.add_argument('--pubs', type=int, default=10)
    parser.add_argument('--rate', type=float, default=20, help='publishes per second per publisher')
    parser.add_argument('--retry-ms', type=float, default=10, help="clients' first reconnect delay")
    parser.add_argument('--retry-max-ms', type=float, default=100, help="clients' longest reconnect delay")
    parser.add_argument('--window', type=float, default=10, help='seconds to wait for recovery per kill')
    parser.add_argument('--settle', type=float, default=2, help='seconds between kills')
    args = parser.parse_args()
    if not 1 <= args.kills <= 40 or not 1 <= args.subs <= 5000 or not 1 <= args.pubs <= 100:
        parser.error('--kills 1..40, --subs 1..5000, --pubs 1..100')
    if not 0 < args.rate <= 1000:
        parser.error('--rate must be in (0, 1000]')
    raise_nofile()
    os.makedirs(RESULTS, exist_ok=True)
    loadavg = os.getloadavg()
    print('recovery bench: %s, %d kills, %d subscribers, %d publishers x %g/s, load average %s' % (
        args.server, args.kills, args.subs, args.pubs, args.rate, ' '.join('%.2f' % x for x in loadavg)), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop every tree on the way out
    results, log, clients_cpu = run(args)
    print()
    print(table(results))
    print('\nclients: %s %% of a core; load average after: %s; server log: %s' % (
        clients_cpu, ' '.join('%.2f' % x for x in os.getloadavg()), log))
    path = os.path.join(RESULTS, 'recovery-latest.json')
    with open(path, 'w') as f:
        json.dump({'args': vars(args), 'loadavg_at_start': loadavg, 'loadavg_at_end': os.getloadavg(),
                   'clients_cpu_pct': clients_cpu, 'server_log': log, 'results': results}, f, indent=1)
    print('wrote %s' % os.path.relpath(path))
    return 1 if any(r.get('fatal') for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())
