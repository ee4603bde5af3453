"""Where a handshake's CPU goes: one standalone gsc worker (``servers.py gsc``'s) runs in this
process while the loadgen's connect scenario runs against it.

    .venv/bin/python bench/profile_connect.py [--n 2000] [--top 30] [--sort tottime]
    .venv/bin/python bench/profile_connect.py --cpu [--runs 5]
    .venv/bin/python bench/profile_connect.py --instructions    # needs valgrind, ~2 min

Prints the loadgen's result line and the top entries of a cProfile profile of the worker's CPU
time (greenlet switches make cumulative times unreliable; ``tottime`` is the figure to read);
with ``--cpu``, no profiler: the worker's own CPU time (user + system) per handshake over each
run, and the median; with ``--instructions``, the worker runs under valgrind's callgrind and the
figure is the user-space instructions per handshake: (Ir of 350 handshakes - Ir of 50) / 300,
which a busy shared machine does not change (kernel time is not counted).
"""

import argparse
import cProfile
import json
import os
import pstats
import resource
import re
import statistics
import sys
import tempfile
import time

import gevent
from gevent import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, os.path.join(HERE, '..', 'tests'))

from kit import free_port  # noqa: E402
LOADGEN = os.path.join(HERE, 'loadgen', 'loadgen.js')
PING_INTERVAL_MS = 3600 * 1000
OPTIONS = {'pingInterval': PING_INTERVAL_MS, 'pingTimeout': 2 * PING_INTERVAL_MS}
INSTRUCTION_COUNTS = (50, 350)
VALGRIND_TIMEOUT = 600


def cpu_seconds():
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(n, concurrency, profile=None):
    """Serve the loadgen's connect scenario once (under ``profile`` when given): the loadgen's
    JSON result, with ``server_cpu_us_per_handshake``."""
    from gsc.server import listen
    sc = listen(0, OPTIONS, host='127.0.0.1')
    sc.on('connection', lambda socket_, status: socket_.on('echo', lambda data, respond: respond(None, data)))
    sc.on('warning', lambda warning: None)
    url = 'ws://127.0.0.1:%d/socketcluster/' % sc.port
    cmd = ['node', LOADGEN, '--url', url, '--scenario', 'connect', '--n', str(n),
           '--concurrency', str(concurrency)]
    cpu_before = cpu_seconds()
    if profile is not None:
        profile.enable()
    loadgen = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        # the result line comes before the loadgen closes its connections: closes are not counted
        with gevent.Timeout(120):
            line = loadgen.stdout.readline()
    finally:
        if profile is not None:
            profile.disable()
        cpu = cpu_seconds() - cpu_before
        loadgen.wait(timeout=30)
        sc.http_server.stop(timeout=1)
        sc.close()
    result = json.loads(line) if line.startswith(b'{') else {}
    if result.get('ok'):
        result['server_cpu_us_per_handshake'] = round(cpu * 1e6 / result['ok'])
    return result


def serve_until(count, port):
    """Serve until ``count`` sockets completed their handshake, then exit at once (what
    ``--instructions`` runs under callgrind)."""
    from gsc.server import listen
    sc = listen(port, OPTIONS, host='127.0.0.1')
    sc.on('warning', lambda warning: None)
    served = []

    def on_connection(socket_, status):
        served.append(1)
        if len(served) >= count:
            os._exit(0)
    sc.on('connection', on_connection)
    sys.stdout.write('ready\n')
    sys.stdout.flush()
    gevent.wait()


def instructions(count):
    """The user-space instructions (callgrind's Ir) of a worker process that served ``count``
    handshakes (its start included)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            ['valgrind', '--tool=callgrind', '--callgrind-out-file=' + os.path.join(tmp, 'out'),
             sys.executable, os.path.abspath(__file__), '--serve-until', str(count), '--port', str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with gevent.Timeout(VALGRIND_TIMEOUT):
                ready = server.stdout.readline()
                if ready != b'ready\n':
                    raise RuntimeError('the worker under valgrind did not start: %r' % ready)
                subprocess.check_output(['node', LOADGEN, '--url', 'ws://127.0.0.1:%d/socketcluster/' % port,
                                         '--scenario', 'connect', '--n', str(count), '--concurrency', '10',
                                         '--op-timeout', '60'])
                errors = server.stderr.read().decode(errors='replace')
                server.wait()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    collected = re.search(r'Collected : (\d+)', errors)
    if collected is None:
        raise RuntimeError('no instruction count from callgrind: %s' % errors[-500:])
    return int(collected.group(1))


def main():
    """Parse the arguments, profile one connect run, print the result and the profile."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--n', type=int, default=2000)
    parser.add_argument('--concurrency', type=int, default=100)
    parser.add_argument('--top', type=int, default=30)
    parser.add_argument('--sort', default='tottime')
    parser.add_argument('--cpu', action='store_true', help='measure CPU per handshake, no profiler')
    parser.add_argument('--runs', type=int, default=5, help='runs with --cpu')
    parser.add_argument('--dump', help='also write the profile to this file (pstats)')
    parser.add_argument('--instructions', action='store_true',
                        help='user-space instructions per handshake under callgrind')
    parser.add_argument('--serve-until', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_until:
        serve_until(args.serve_until, args.port)
        return
    if args.instructions:
        few, many = (instructions(count) for count in INSTRUCTION_COUNTS)
        sys.stdout.write('instructions per handshake: %d (callgrind Ir: %d for %d handshakes, %d for %d)\n'
                         % ((many - few) / (INSTRUCTION_COUNTS[1] - INSTRUCTION_COUNTS[0]),
                            few, INSTRUCTION_COUNTS[0], many, INSTRUCTION_COUNTS[1]))
        return
    if args.cpu:
        figures = []
        for _ in range(max(1, min(args.runs, 20))):
            result = run(args.n, args.concurrency)
            figures.append(result.get('server_cpu_us_per_handshake') or float('nan'))
            report(result)
        sys.stdout.write('median server CPU per handshake: %.0f us\n' % statistics.median(figures))
        return
    profile = cProfile.Profile(time.process_time)  # CPU time: the machine is shared
    report(run(args.n, args.concurrency, profile))
    stats = pstats.Stats(profile, stream=sys.stdout)
    if args.dump:
        stats.dump_stats(args.dump)
    stats.sort_stats(args.sort).print_stats(args.top)


def report(result):
    """One line: the loadgen's figures that matter here."""
    keys = ('ok', 'failures', 'handshakes_per_s', 'server_cpu_us_per_handshake')
    sys.stdout.write(json.dumps({key: result.get(key) for key in keys}) + '\n')


if __name__ == '__main__':
    main()
