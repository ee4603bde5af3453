"""Run a master (tests/master_driver.py) as a real process tree and watch its events.

The tree runs in its own session, so its process group holds every process it starts;
:meth:`MasterProcess.cleanup` kills that group (by its id) whatever happened.
"""

import json
import os
import queue
import random
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, 'tests', 'master_driver.py')


def free_port():
    """A TCP port nobody uses right now, below the kernel's ephemeral range: the client sockets
    of other tests and benches (thousands at once) take their ports from that range, so a port
    picked there could be taken by one of them before the server binds it."""
    low = ephemeral_port_range()[0]
    for _ in range(100):
        port = random.randrange(10000, low) if low > 11000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(('0.0.0.0', port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError('no free port below %d' % low)


def ephemeral_port_range():
    """``(low, high)`` of the ports the kernel gives client sockets."""
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            low, high = f.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def group_members(pgid):
    """Live (non-zombie) pids of process group ``pgid``."""
    pids = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != 'Z':
            pids.append(int(name))
    return pids


class MasterProcess:
    """A master started from ``options``; ``events`` is everything it reported so far."""

    def __init__(self, options, env=None):
        # the tree's socket directories live in a directory of this test, removed at cleanup
        # (entered by a downgradeToUser too: the master makes the private part inside)
        self.socket_parent = tempfile.mkdtemp(prefix='gsc-test-')
        os.chmod(self.socket_parent, 0o755)
        base = {'paths': {'appDirPath': ROOT}, 'logLevel': 1,
                'socketRoot': os.path.join(self.socket_parent, 'run')}
        base.update(options)
        self.proc = subprocess.Popen(
            [sys.executable, DRIVER, json.dumps(base)], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=None, text=True, start_new_session=True,
            env=dict(os.environ, **(env or {})))
        self.pid = self.pgid = self.proc.pid
        self.events = []
        self._queue = queue.Queue()
        self._taken = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self._queue.put(json.loads(line))
            except ValueError:
                pass
        self._queue.put(None)

    def send(self, cmd, **fields):
        """Send one command to the driver."""
        self.proc.stdin.write(json.dumps(dict(fields, cmd=cmd)) + '\n')
        self.proc.stdin.flush()

    def _pull(self, deadline):
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            if event is None:
                self._queue.put(None)
                return False
            self.events.append(event)
            return True

    def expect(self, event, timeout=15, **match):
        """The first event named ``event`` not returned before whose fields match
        (``data`` matched as a subset), waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for index in range(checked, len(self.events)):
                candidate = self.events[index]
                if index not in self._taken and candidate.get('event') == event \
                        and _matches(candidate, match):
                    self._taken.add(index)
                    return candidate
            checked = len(self.events)
            if not self._pull(deadline):
                raise AssertionError('no %s %r within %ss; events: %s'
                                     % (event, match, timeout, self.events[-15:]))

    def collect(self, seconds):
        """Every event of the next ``seconds``."""
        deadline = time.monotonic() + seconds
        start = len(self.events)
        while self._pull(deadline):
            pass
        return self.events[start:]

    def ready(self, timeout=20):
        """Wait for ``ready``."""
        return self.expect('ready', timeout=timeout)

    def children(self):
        """Live pids of the tree except the master."""
        return [pid for pid in group_members(self.pgid) if pid != self.pid]

    def stop(self, timeout=20):
        """SIGTERM the master; its exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def cleanup(self):
        """Kill whatever is left of the tree (by its process group id)."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.socket_parent, ignore_errors=True)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def start_cluster(request, options, ready=True):
    """A MasterProcess of ``options`` on a free port (its ``port`` attribute), ready unless
    ``ready`` is false; its whole tree is killed at the test's teardown."""
    port = free_port()
    master = MasterProcess(dict(options, port=port))
    request.addfinalizer(master.cleanup)
    master.port = port
    if ready:
        master.ready(timeout=30)
    return master


def _matches(event, match):
    for key, value in match.items():
        actual = event.get(key)
        if isinstance(value, dict) and isinstance(actual, dict):
            if any(actual.get(k) != v for k, v in value.items()):
                return False
        elif actual != value:
            return False
    return True
