"""Process trees of the cluster benchmarks (used by bench/run_all.py --cluster).

* :class:`Tree`: a command started in its own session (so its process group is its pid),
  its stdout/stderr copied to a log by a thread that timestamps every line; stopped by
  SIGTERM to the root, then SIGKILL to the whole process group (also on error).
* :func:`start_cluster`: ``python run.py -p PORT -w N -b 1 --wc bench.echo_controller -e prod``
  with SOCKETCLUSTER_OPTIONS; a private ``socketRoot`` per tree, because two masters started
  from the same app directory with the same appName share (and wipe) one socket directory.
* :func:`start_socketcluster`: SocketCluster 14.4.2 itself (``bench/socketcluster/server.js``),
  with a private ``socketRoot`` too.
* :func:`start_redis`: a private redis-server on a free port, stopped by process group.
* :func:`probe`: a blocking raw-WebSocket SocketCluster client (upgrade, ``#handshake``, then
  emits; the frames of tests/kit.py), used to measure start-up and respawn: nothing of gsc is
  imported here.
* :func:`measure_startup` and :func:`measure_respawn`: the two timing scenarios.

127.0.0.1 only; every loop is bounded in count and time.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from kit import (OP_CLOSE, OP_TEXT, FrameReader, close_frame, client_frame, emit_frame, free_port,  # noqa: E402
                 proc_stats, recv_frame, start_process, stop_process, upgrade)
HOST = '127.0.0.1'
CONTROLLER = 'bench.echo_controller'
SC_SERVER = os.path.join(HERE, 'socketcluster', 'server.js')
PING_INTERVAL_MS = 3600 * 1000
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
BANNER = 'SocketCluster started'


class Tree:
    """A process tree in its own session; ``lines`` = [(monotonic time, text)] of its output."""

    def __init__(self, cmd, log_path, env=None, cwd=ROOT):
        self.log_path = log_path
        self.lines = []
        self._log = open(log_path, 'w', errors='replace')
        self.started = time.monotonic()
        self.proc = start_process(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.pgid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            text = raw.decode('utf-8', 'replace').rstrip('\n')
            self.lines.append((time.monotonic(), text))
            self._log.write('%.3f %s\n' % (time.monotonic() - self.started, text))
            self._log.flush()

    def first_line(self, mark, after=0.0):
        """Monotonic time of the first output line containing ``mark`` after ``after``."""
        for when, text in list(self.lines):
            if when >= after and mark in text:
                return when
        return None

    def poll(self):
        return self.proc.poll()

    def stop(self):
        """SIGTERM to the root (a master stops its children), then SIGKILL to the group."""
        stop_process(self.proc, term_timeout=STOP_TIMEOUT, timeout=STOP_TIMEOUT, close=False)
        self._reader.join(STOP_TIMEOUT)
        self.proc.stdout.close()
        self._log.close()

    def output(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()


class Stack:
    """Several trees (plus temporary directories) stopped together, last started first."""

    def __init__(self):
        self.trees = []
        self.dirs = []

    def add(self, tree):
        self.trees.append(tree)
        return tree

    def stop(self):
        for tree in reversed(self.trees):
            tree.stop()
        for path in self.dirs:
            shutil.rmtree(path, ignore_errors=True)


def cluster_options(extra=None, socket_root=None):
    """SOCKETCLUSTER_OPTIONS of a bench cluster: the standalone bench server's settings, and
    no WSGI app (run.py's samples add its chat page otherwise; the bench needs no HTTP)."""
    options = {'pingInterval': PING_INTERVAL_MS, 'pingTimeout': 2 * PING_INTERVAL_MS,
               'allowClientPublish': True, 'socketRoot': socket_root, 'wsgiApp': None}
    options.update(extra or {})
    return options


def start_cluster(stack, port, log_path, workers=2, brokers=1, extra=None, root=ROOT, controller=CONTROLLER):
    """``run.py`` of checkout ``root`` on ``port`` (its own session, private socketRoot): the
    Tree, not waited for. Its processes import ``root``'s gsc (run.py's directory)."""
    socket_root = tempfile.mkdtemp(prefix='gsc-bench-')
    stack.dirs.append(socket_root)
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               SOCKETCLUSTER_OPTIONS=json.dumps(cluster_options(extra, socket_root)))
    cmd = [sys.executable, os.path.join(root, 'run.py'), '-p', str(port), '-w', str(workers),
           '-b', str(brokers), '--wc', controller, '-e', 'prod']
    return stack.add(Tree(cmd, log_path, env=env, cwd=root))


def start_socketcluster(stack, port, log_path, workers=1, brokers=1):
    """SocketCluster 14.4.2 on ``port`` (its own session, private socketRoot); the Tree, not
    waited for."""
    socket_root = tempfile.mkdtemp(prefix='gsc-bench-sc-')
    stack.dirs.append(socket_root)
    env = dict(os.environ, SOCKETCLUSTER_OPTIONS=json.dumps({'socketRoot': socket_root}))
    cmd = ['node', SC_SERVER, '--port', str(port), '--workers', str(workers), '--brokers', str(brokers)]
    return stack.add(Tree(cmd, log_path, env=env))


def start_redis(stack, log_path):
    """A private redis-server on a free port (no persistence); (tree, url) once it answers PING."""
    binary = shutil.which('redis-server')
    if binary is None:
        raise RuntimeError('redis-server is not installed')
    port = free_port()
    tree = stack.add(Tree([binary, '--port', str(port), '--bind', HOST, '--save', '',
                           '--appendonly', 'no'], log_path))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if tree.poll() is not None:
            raise RuntimeError('redis-server exited with code %s' % tree.poll())
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as s:
                s.sendall(b'PING\r\n')
                if s.recv(64).startswith(b'+PONG'):
                    return tree, 'redis://%s:%d/0' % (HOST, port)
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError('redis-server did not answer PING on port %d' % port)


# -- a raw SocketCluster client ------------------------------------------------------------

def _next_text(sock, reader):
    """The next text frame (control frames skipped; a close frame or the end raises)."""
    for _ in range(1000):
        try:
            opcode, payload = recv_frame(sock, reader)
        except EOFError:
            raise ConnectionError('connection closed by the server') from None
        if opcode == OP_CLOSE:
            raise ConnectionError('close frame %r' % payload[:40])
        if opcode == OP_TEXT:
            return payload.decode()
    raise ConnectionError('no text frame in 1000 frames')


def probe(port, events=(), timeout=1.0):
    """Upgrade, ``#handshake``, then emit each (event, data); the list of answers' data."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = FrameReader(upgrade(sock, port, key=None))
        answers = []
        for cid, (event, data) in enumerate([('#handshake', {})] + list(events), 1):
            sock.sendall(emit_frame(event, data, cid))
            for _ in range(100):
                text = _next_text(sock, reader)
                if text == '#1':
                    sock.sendall(client_frame('#2'))
                    continue
                message = json.loads(text)
                if message.get('rid') == cid:
                    break
            else:
                raise ConnectionError('no answer to %s' % event)
            if message.get('error'):
                raise ConnectionError('%s answered an error: %r' % (event, message['error']))
            answers.append(message.get('data'))
        sock.sendall(close_frame())  # a normal close: no 'Socket hung up' warning per probe
        return answers
    finally:
        sock.close()


def wait_serving(tree, port, timeout=READY_TIMEOUT, pause=0.01):
    """Monotonic time of the first successful #handshake on ``port``; raise on exit/timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tree.poll() is not None:
            raise RuntimeError('%s exited with code %s before serving' % (tree.log_path, tree.poll()))
        try:
            probe(port)
            return time.monotonic()
        except (OSError, ValueError):
            time.sleep(pause)
    raise RuntimeError('no handshake on port %d within %.0f s' % (port, timeout))


def wait_started(tree, timeout=READY_TIMEOUT, pause=0.05):
    """Return once the tree's log says every worker listens ('SocketCluster started'): before
    that, a killed worker fails the whole start (fail-fast), it is not respawned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tree.poll() is not None:
            raise RuntimeError('%s exited with code %s before starting' % (tree.log_path, tree.poll()))
        with open(tree.log_path, errors='replace') as f:
            if 'SocketCluster started' in f.read():
                return
        time.sleep(pause)
    raise RuntimeError('%s did not start within %.0f s' % (tree.log_path, timeout))


# -- /proc -----------------------------------------------------------------------------------

def children(pid):
    """Pids whose parent is ``pid`` (from /proc/*/stat)."""
    return [child for child, fields in proc_stats() if int(fields[1]) == pid]


def worker_pids(master_pid):
    """The workers: children of the master's child that has children (the worker cluster)."""
    for child in children(master_pid):
        grandchildren = children(child)
        if grandchildren:
            return sorted(grandchildren)
    return []


# -- the timing scenarios -----------------------------------------------------------------------

def measure_startup(log_path, workers=2):
    """One ``run.py -w N`` from Popen to its first #handshake; also when the banner appeared."""
    stack = Stack()
    port = free_port()
    try:
        tree = start_cluster(stack, port, log_path, workers=workers)
        served = wait_serving(tree, port)
        time.sleep(0.2)  # the banner line may still be in the pipe
        banner = tree.first_line(BANNER)
        return {'ready_ms': round((served - tree.started) * 1000, 1),
                'banner_ms': round((banner - tree.started) * 1000, 1) if banner else None,
                'workers': len(worker_pids(tree.pid))}
    except RuntimeError as err:
        return {'fatal': str(err)}
    finally:
        stack.stop()


def measure_respawn(log_path, kills=5, workers=2, window=15.0, settle=1.0):
    """``kill -9`` one worker at a time (alternating) while a client handshakes in a loop.

    For each kill: ``serving_ms`` = from the kill to the first probe (connect + #handshake +
    ``pid`` RPC) answered by a pid that did not exist before the kill; ``respawned_ms`` /
    ``controller_ms`` = when the worker cluster logged the respawn / the new worker's controller
    logged its pid; ``probe_failures`` = probes that failed meanwhile (refused, reset, timed out).
    Returns one result dict per kill (a 'fatal' one when something broke).
    """
    stack = Stack()
    port = free_port()
    results = []
    try:
        tree = start_cluster(stack, port, log_path, workers=workers)
        wait_started(tree)
        for k in range(kills):
            before = worker_pids(tree.pid)
            if len(before) != workers:
                results.append({'fatal': 'expected %d workers, found %s' % (workers, before)})
                break
            victim = before[k % workers]
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            failures = probes = 0
            served = new_pid = None
            while time.monotonic() - t0 < window and probes < 100000:
                probes += 1
                try:
                    pid = probe(port, [('pid', None)])[1]
                except (OSError, ValueError):
                    failures += 1
                    time.sleep(0.002)
                    continue
                if pid not in before:
                    served, new_pid = time.monotonic(), pid
                    break
            if tree.poll() is not None:
                results.append({'fatal': 'the master exited with code %s' % tree.poll()})
                break
            if served is None:
                results.append({'fatal': 'no handshake on a new worker within %.0f s' % window,
                                'probe_failures': failures})
                break
            time.sleep(0.2)  # log lines still in the pipe
            respawned = tree.first_line('was respawned', t0)
            controller = tree.first_line('bench worker', t0)
            results.append({
                'serving_ms': round((served - t0) * 1000, 1),
                'respawned_ms': round((respawned - t0) * 1000, 1) if respawned else None,
                'controller_ms': round((controller - t0) * 1000, 1) if controller else None,
                'probes': probes, 'probe_failures': failures, 'killed_pid': victim, 'new_pid': new_pid})
            time.sleep(settle)
    except RuntimeError as err:
        results.append({'fatal': str(err)})
    finally:
        stack.stop()
    return results
