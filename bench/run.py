"""Benchmark one gsc worker over loopback with the Node loadgen in a separate process.

    npm ci --prefix bench/loadgen && python bench/run.py [--quick] [--only rpc,fanout] [--repeat N]

For each scenario and server: start ``bench/servers.py SERVER`` as its own process, wait
until it accepts, run ``bench/loadgen/loadgen.js``, keep its JSON line, stop the server by
pid. Prints a markdown table and writes bench/results/latest.json (server stderr logs beside it).
"""

import argparse
import datetime
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, 'servers.py')
LOADGEN = os.path.join(HERE, 'loadgen', 'loadgen.js')
RESULTS = os.path.join(HERE, 'results')
HOST = '127.0.0.1'
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
MAX_REPEAT = 10

# scenario -> (servers, headline metric, unit, loadgen args full, loadgen args --quick)
SCENARIOS = {
    'rpc': (('gsc', 'bare'), 'acks_per_s', 'acks/s',
            ['--conns', '100', '--window', '10', '--duration', '10', '--warmup', '2'],
            ['--conns', '50', '--window', '10', '--duration', '3', '--warmup', '1']),
    'fanout': (('gsc',), 'deliveries_per_s', 'deliveries/s',
               ['--subs', '1000', '--pub-window', '50', '--duration', '10', '--warmup', '2'],
               ['--subs', '200', '--pub-window', '50', '--duration', '3', '--warmup', '1', '--drain', '3']),
    'connect': (('gsc', 'bare'), 'handshakes_per_s', 'handshakes/s',
                ['--n', '2000', '--concurrency', '100'],
                ['--n', '500', '--concurrency', '100']),
    'idle': (('gsc', 'bare'), 'kib_per_conn_rss', 'KiB/conn',
             ['--idle-n', '5000', '--concurrency', '100', '--settle', '5'],
             ['--idle-n', '1000', '--concurrency', '100', '--settle', '2']),
}
# loadgen fields that count something that went wrong
FAILURE_FIELDS = ('errors', 'conn_fail', 'sub_fail', 'failures', 'undelivered_after_drain')


def raise_nofile():
    """Raise this process's soft fd limit to the hard one (inherited by the server and loadgen)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port():
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_accepting(proc, port):
    """Return once ``port`` accepts; raise if the server exits or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('server exited with code %s before accepting' % proc.returncode)
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError('server did not accept within %.0f s' % START_TIMEOUT)


def stop(proc):
    """SIGTERM the server by pid, SIGKILL it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def loadgen_timeout(args):
    """Seconds after which the loadgen is killed: its own hard cap plus a margin."""
    opts = dict(zip(args[::2], args[1::2]))
    return (float(opts.get('--warmup', 2)) + float(opts.get('--duration', 10))
            + float(opts.get('--drain', 5)) + 120 + 30)


def run_once(scenario, server, args, tag):
    """One server process + one loadgen run: the loadgen's JSON result plus what we saw."""
    port = free_port()
    url = 'ws://%s:%d/socketcluster/' % (HOST, port)
    log_path = os.path.join(RESULTS, '%s-%s-%s.stderr.log' % (scenario, server, tag))
    result = {}
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen([sys.executable, SERVERS, server, '--port', str(port)],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            wait_accepting(proc, port)
            cmd = ['node', LOADGEN, '--url', url, '--scenario', scenario, '--pid', str(proc.pid),
                   '--label', server] + args
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=loadgen_timeout(args))
                lines = [line for line in done.stdout.splitlines() if line.startswith('{')]
                result = json.loads(lines[-1]) if lines else {'fatal': 'no JSON from loadgen: %s' % done.stderr[-500:]}
            except subprocess.TimeoutExpired:
                result = {'fatal': 'loadgen killed after %.0f s' % loadgen_timeout(args)}
            if proc.poll() is not None:
                result['server_died'] = 'exit code %s' % proc.returncode
        except RuntimeError as err:
            result = {'fatal': str(err)}
        finally:
            stop(proc)
    with open(log_path, errors='replace') as log:
        result['server_stderr'] = log.read()[-3000:]
    result['server_stderr_log'] = os.path.relpath(log_path, HERE)
    return result


def median_of(runs):
    """The median of every numeric field over ``runs`` (one run: itself)."""
    keys = {k for run in runs for k, v in run.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: statistics.median(run[k] for run in runs if isinstance(run.get(k), (int, float)))
            for k in sorted(keys)}


def problems(runs):
    """What went wrong in ``runs``: loadgen failure counts, fatal results, dead servers, logged errors."""
    found = []
    for i, run in enumerate(runs):
        bad = {k: run[k] for k in FAILURE_FIELDS if run.get(k)}
        if bad:
            found.append('run %d: %s %s' % (i + 1, bad, run.get('error_kinds') or run.get('fail_kinds') or ''))
        for key in ('fatal', 'server_died'):
            if run.get(key):
                found.append('run %d: %s: %s' % (i + 1, key, run[key]))
        if any(mark in run.get('server_stderr', '') for mark in ('ERROR', 'Traceback')):
            found.append('run %d: server stderr (%s):\n%s' % (i + 1, run['server_stderr_log'], run['server_stderr']))
    return found


def fmt(value, digits=0):
    """A number for the table, '-' when missing."""
    if value is None:
        return '-'
    return '{:,.{}f}'.format(value, digits)


def fmt_metric(value, unit):
    """A headline figure with its unit."""
    return '%s %s' % (fmt(value, 1 if unit == 'KiB/conn' else 0), unit)


def table(rows):
    """The markdown table of ``rows`` (ratios against the bare server of the same scenario)."""
    out = ['| scenario | server | result | p50 ms | p99 ms | server CPU % | loadgen CPU % | failures | gsc/bare |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        med, unit = row['median'], row['unit']
        value = med.get(row['metric'])
        failures = sum(med.get(k, 0) for k in FAILURE_FIELDS)
        ratio = row.get('ratio_vs_bare')
        out.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            row['scenario'], row['server'], fmt_metric(value, unit),
            fmt(med.get('p50_ms'), 2), fmt(med.get('p99_ms'), 1), fmt(med.get('server_cpu_pct')),
            fmt(med.get('loadgen_cpu_pct')), fmt(failures), '-' if ratio is None else '%.2f' % ratio))
    return '\n'.join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='short runs with fewer connections (smoke run)')
    parser.add_argument('--only', default=','.join(SCENARIOS), help='comma-separated scenarios: %(default)s')
    parser.add_argument('--repeat', type=int, default=1, help='runs per scenario and server; medians are reported')
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(',') if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown or not only:
        parser.error('unknown scenario(s) %s; choose from %s' % (unknown, ', '.join(SCENARIOS)))
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error('--repeat must be 1..%d' % MAX_REPEAT)
    if not os.path.isdir(os.path.join(HERE, 'loadgen', 'node_modules', 'ws')):
        parser.error('run `npm ci --prefix bench/loadgen` first')
    raise_nofile()
    os.makedirs(RESULTS, exist_ok=True)

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    loadavg = os.getloadavg()
    print('gsc bench: %s, %s, repeat %d, load average %s' % (
        'quick' if args.quick else 'full', ','.join(only), args.repeat,
        ' '.join('%.2f' % x for x in loadavg)), flush=True)
    rows = []
    for scenario in only:
        servers, metric, unit, full, quick = SCENARIOS[scenario]
        runs = {server: [] for server in servers}
        for rep in range(args.repeat):
            for server in servers:  # interleaved, so drift on the machine hits both alike
                result = run_once(scenario, server, quick if args.quick else full, str(rep + 1))
                runs[server].append(result)
                print('  %s %s run %d: %s' % (scenario, server, rep + 1, fmt_metric(result.get(metric), unit)), flush=True)
        for server in servers:
            rows.append({'scenario': scenario, 'server': server, 'metric': metric, 'unit': unit,
                         'median': median_of(runs[server]), 'runs': runs[server],
                         'problems': problems(runs[server])})
        if 'bare' in runs:
            scenario_rows = rows[-len(servers):]
            bare = next(row for row in scenario_rows if row['server'] == 'bare')['median'].get(metric)
            for row in scenario_rows:
                value = row['median'].get(metric)
                row['ratio_vs_bare'] = value / bare if value is not None and bare else None

    print()
    print(table(rows))
    for row in rows:
        for problem in row['problems']:
            print('\n%s %s: %s' % (row['scenario'], row['server'], problem))
    path = os.path.join(RESULTS, 'latest.json')
    with open(path, 'w') as f:
        json.dump({'started': started, 'quick': args.quick, 'repeat': args.repeat,
                   'loadavg_at_start': loadavg, 'ncpu': os.cpu_count(), 'rows': rows}, f, indent=1)
    print('\nwrote %s' % os.path.relpath(path))


if __name__ == '__main__':
    main()
