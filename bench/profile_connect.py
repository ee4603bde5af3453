"""Where a handshake's CPU goes: one standalone gsc worker (``servers.py gsc``'s) runs in this
process while the loadgen's connect scenario runs against it.

    .venv/bin/python bench/profile_connect.py [--n 2000] [--top 30] [--sort tottime]
    .venv/bin/python bench/profile_connect.py --cpu [--runs 5]

Prints the loadgen's result line and the top entries of a cProfile profile (greenlet switches
make cumulative times unreliable; ``tottime`` is the figure to read); with ``--cpu``, no
profiler: the worker's own CPU time (user + system) per handshake over each run, and the median.
"""

import argparse
import cProfile
import json
import os
import pstats
import resource
import statistics
import sys
import time

import gevent
from gevent import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
LOADGEN = os.path.join(HERE, 'loadgen', 'loadgen.js')
PING_INTERVAL_MS = 3600 * 1000


def cpu_seconds():
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(n, concurrency, profile=None):
    """Serve the loadgen's connect scenario once (under ``profile`` when given): the loadgen's
    JSON result, with ``server_cpu_us_per_handshake``."""
    from gsc.server import listen
    sc = listen(0, {'pingInterval': PING_INTERVAL_MS, 'pingTimeout': 2 * PING_INTERVAL_MS}, host='127.0.0.1')
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
    args = parser.parse_args()
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
