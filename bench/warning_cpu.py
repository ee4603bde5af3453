"""Worker CPU per frame that causes a warning: ``python bench/warning_cpu.py [TREE ...]``.

For each gsc tree given (default: this one), at logLevel 1 and 2, starts ``run.py -w 1 -b 1``
of that tree (its sample controllers, no wsgiApp), sends FRAMES publishes to a channel that
is not a string (each one a warning, answered with an error) in pipelined chunks, and reads
the CPU time of the worker, and of the whole tree, from /proc/<pid>/stat before and after.
Prints one line per run: microseconds of CPU per hostile frame.  127.0.0.1 only; every tree
is stopped by its process group.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from websockets.sync.client import connect

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))

from cluster import children, worker_pids  # noqa: E402
from kit import free_port  # noqa: E402

FRAMES = 20000
CHUNK = 500
TICKS = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    """utime + stime of ``pid`` in seconds."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_pids(pid):
    """``pid`` and every descendant."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(children(current))
    return pids


def start_tree(tree, port, log_level, socket_root):
    """``run.py -w 1 -b 1`` of ``tree`` on ``port``; its worker pid once it serves."""
    options = {'logLevel': log_level, 'wsgiApp': None, 'socketRoot': socket_root}
    proc = subprocess.Popen(
        [os.path.join(tree, '.venv', 'bin', 'python'), 'run.py', '-w', '1', '-b', '1', '-p',
         str(port), '-e', 'prod'], cwd=tree, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
        env=dict(os.environ, SOCKETCLUSTER_OPTIONS=json.dumps(options)))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with connect('ws://127.0.0.1:%d/socketcluster/' % port, open_timeout=1):
                return proc, worker_pids(proc.pid)[0]
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError('%s did not serve on port %d' % (tree, port))


def send_hostile_frames(port):
    """FRAMES publishes to channel 5, every answer read; the count of error answers."""
    errors = 0
    with connect('ws://127.0.0.1:%d/socketcluster/' % port, max_size=None) as ws:
        ws.send('{"event":"#handshake","data":{},"cid":1}')
        ws.recv(10)
        cid = 1
        for _ in range(FRAMES // CHUNK):
            for _ in range(CHUNK):
                cid += 1
                ws.send('{"event":"#publish","data":{"channel":5,"data":1},"cid":%d}' % cid)
            answered = 0
            while answered < CHUNK:
                packet = json.loads(ws.recv(30))
                if 'rid' in packet:
                    answered += 1
                    errors += 'error' in packet
    return errors


def measure(tree, log_level):
    """(worker µs per frame, tree µs per frame, error answers) for one fresh run."""
    port = free_port()
    with tempfile.TemporaryDirectory() as socket_root:
        proc, worker = start_tree(tree, port, log_level, socket_root)
        try:
            time.sleep(1)
            pids = tree_pids(proc.pid)
            before = (cpu_seconds(worker), sum(map(cpu_seconds, pids)))
            errors = send_hostile_frames(port)
            time.sleep(0.5)  # let the master drain what the worker sent it
            after = (cpu_seconds(worker), sum(map(cpu_seconds, pids)))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    per_frame = [(a - b) / FRAMES * 1e6 for a, b in zip(after, before)]
    return per_frame[0], per_frame[1], errors


def main(trees):
    for log_level in (1, 2):
        for tree in trees:
            worker, whole, errors = measure(tree, log_level)
            print('logLevel %d  %-22s worker %6.1f µs/frame  tree %6.1f µs/frame  (%d/%d answered '
                  'with an error)' % (log_level, tree, worker, whole, errors, FRAMES), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:] or [os.path.dirname(HERE)])
