"""Run a master (tests/master_driver.py) as a real process tree and watch its events.

The tree runs in its own session, so its process group holds every process it starts;
:meth:`MasterProcess.cleanup` kills that group (by its id) whatever happened.
"""

import json
import os
import queue
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from kit import ROOT, free_port, group_members, start_process, stop_process  # noqa: F401 (re-exported)

DRIVER = os.path.join(ROOT, 'tests', 'master_driver.py')


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
        self.proc = start_process(
            [sys.executable, DRIVER, json.dumps(base)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=None, text=True, env=dict(os.environ, **(env or {})))
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
        stop_process(self.proc)
        shutil.rmtree(self.socket_parent, ignore_errors=True)


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
