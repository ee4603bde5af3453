"""Benchmark gsc over loopback with the Node loadgen in a separate process.

    npm ci --prefix bench/loadgen && npm ci --prefix bench/socketcluster
    python bench/run_all.py [--quick] [--only rpc,fanout] [--repeat N] [--cluster]

For each scenario and server: start the server (``bench/servers.py SERVER``, SocketCluster
14.4.2 itself: ``bench/socketcluster/server.js``, or with --cluster whole ``run.py`` trees, see
bench/cluster.py) in its own session, wait until it accepts, run ``bench/loadgen/loadgen.js``,
keep its JSON line, stop the tree by process group. Every figure is also divided by
SocketCluster's in the same command.
The startup and respawn scenarios (--cluster) are timed from here, without the loadgen; the
http scenario measures a WSGI route with ``wrk`` (Debian's package) while the loadgen holds
idle sockets.
Prints a markdown table and writes bench/results/latest.json (server logs beside it).
"""

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time

import cluster  # noqa: I001 (puts tests/ on sys.path, for kit)
from kit import free_port, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, 'servers.py')
LOADGEN = os.path.join(HERE, 'loadgen', 'loadgen.js')
SC_DIR = os.path.join(HERE, 'socketcluster')
RESULTS = os.path.join(HERE, 'results')
HOST = '127.0.0.1'
START_TIMEOUT = 15.0
MAX_REPEAT = 10

# scenario -> (servers, headline metric, unit, loadgen args full, loadgen args --quick);
# startup and respawn take {'n': runs} / {'kills': kills} instead of loadgen args.
SCENARIOS = {
    'rpc': (('sc', 'cluster1w', 'gsc', 'bare', 'cluster2w'), 'acks_per_s', 'acks/s',
            ['--conns', '100', '--window', '10', '--duration', '10', '--warmup', '2'],
            ['--conns', '50', '--window', '10', '--duration', '3', '--warmup', '1']),
    'fanout': (('sc', 'cluster1w', 'gsc', 'cluster2w', 'redis2i'), 'deliveries_per_s', 'deliveries/s',
               ['--subs', '1000', '--pub-window', '50', '--duration', '10', '--warmup', '2'],
               ['--subs', '200', '--pub-window', '50', '--duration', '3', '--warmup', '1', '--drain', '3']),
    'connect': (('sc', 'cluster1w', 'gsc', 'bare'), 'handshakes_per_s', 'handshakes/s',
                ['--n', '2000', '--concurrency', '100'],
                ['--n', '500', '--concurrency', '100']),
    'idle': (('sc', 'cluster1w', 'gsc', 'bare'), 'kib_per_conn_rss', 'KiB/conn',
             ['--idle-n', '5000', '--concurrency', '100', '--settle', '5'],
             ['--idle-n', '1000', '--concurrency', '100', '--settle', '2']),
    'startup': (('cluster2w',), 'ready_ms', 'ms', {'n': 5}, {'n': 3}),
    'respawn': (('cluster2w',), 'serving_ms', 'ms', {'kills': 6}, {'kills': 4}),
    'http': (('gsc', 'bare'), 'requests_per_s', 'req/s',
             {'idle': 1000, 'connections': 50, 'duration': 10},
             {'idle': 200, 'connections': 50, 'duration': 3}),
}
# servers that are run.py trees (only with --cluster); scenarios that need no loadgen;
# the ratio bases: SocketCluster 14.4.2 (1 worker + 1 broker), the bare server, one gsc worker
BASES = ('sc', 'bare', 'gsc')
CLUSTER_SERVERS = ('cluster2w', 'redis2i')
TIMED = ('startup', 'respawn')
WRK = shutil.which('wrk')
WRK_WARMUP = 2
CLUSTER_LOG_LEVEL = 1  # under load: errors only (not one propagated warning per dropped socket)
# loadgen fields that count something that went wrong
FAILURE_FIELDS = ('errors', 'conn_fail', 'sub_fail', 'failures', 'undelivered_after_drain')


def raise_nofile():
    """Raise this process's soft fd limit to the hard one (inherited by the server and loadgen)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_accepting(proc, port):
    """Return once ``port`` accepts; raise if the server exits or START_TIMEOUT passes."""
    def accepting():
        if proc.poll() is not None:
            raise RuntimeError('server exited with code %s before accepting' % proc.returncode)
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_until(accepting, START_TIMEOUT, 0.1, 'server did not accept within %.0f s' % START_TIMEOUT,
               RuntimeError)


def loadgen_timeout(args):
    """Seconds after which the loadgen is killed: its own hard cap plus a margin."""
    opts = dict(zip(args[::2], args[1::2]))
    return (float(opts.get('--warmup', 2)) + float(opts.get('--duration', 10))
            + float(opts.get('--drain', 5)) + 120 + 30)


SERVER_ENV = {}
"""Environment variables set for the Python servers only (``--server-env``), not the loadgen."""


def parse_settings(parser, option, settings):
    """``{NAME: VALUE}`` of an option's ``NAME=VALUE`` arguments (a usage error otherwise)."""
    env = {}
    for setting in settings:
        name, sep, value = setting.partition('=')
        if not sep or not name:
            parser.error('%s takes NAME=VALUE, not %r' % (option, setting))
        env[name] = value
    return env


def start_server(stack, server, port, log_path):
    """Start ``server`` listening on ``port``: (the pid whose tree the loadgen measures, extra
    loadgen args). Every process tree is in its own session, in ``stack``."""
    if server in ('gsc', 'bare'):
        tree = stack.add(cluster.Tree([sys.executable, SERVERS, server, '--port', str(port)], log_path,
                                      env=dict(os.environ, **SERVER_ENV)))
        wait_accepting(tree.proc, port)
        return tree.pid, []
    if server == 'sc':  # SocketCluster 14.4.2: master + 1 worker + 1 broker
        tree = cluster.start_socketcluster(stack, port, log_path)
        cluster.wait_serving(tree, port)
        return tree.pid, []
    quiet = {'logLevel': CLUSTER_LOG_LEVEL}
    if server in ('cluster1w', 'cluster2w'):  # 1 or 2 workers + 1 broker
        tree = cluster.start_cluster(stack, port, log_path, workers=int(server[-2]), extra=quiet)
        cluster.wait_serving(tree, port)
        return tree.pid, []
    if server == 'redis2i':  # two instances of 1 worker each, through a private redis-server
        _, url = cluster.start_redis(stack, log_path.replace('.stderr.log', '-redis.stderr.log'))
        extra = dict(quiet, brokerEngine='redis', brokerEngineOptions={'url': url}, brokers=0)
        tree_a = cluster.start_cluster(stack, port, log_path, workers=1, extra=extra)
        port_b = free_port()
        tree_b = cluster.start_cluster(stack, port_b, log_path.replace('.stderr.log', '-B.stderr.log'),
                                       workers=1, extra=extra)
        cluster.wait_serving(tree_a, port)
        cluster.wait_serving(tree_b, port_b)
        return tree_a.pid, ['--pub-url', 'ws://%s:%d/socketcluster/' % (HOST, port_b)]
    raise ValueError(server)


def run_once(scenario, server, args, tag, start=start_server):
    """One server (tree), started by ``start`` (:func:`start_server`'s signature), + one loadgen
    run: the loadgen's JSON result plus what we saw."""
    port = free_port()
    url = 'ws://%s:%d/socketcluster/' % (HOST, port)
    log_path = os.path.join(RESULTS, '%s-%s-%s.stderr.log' % (scenario, server, tag))
    result = {}
    stack = cluster.Stack()
    try:
        pid, extra = start(stack, server, port, log_path)
        cmd = ['node', LOADGEN, '--url', url, '--scenario', scenario, '--pid', str(pid),
               '--label', server] + extra + args
        result = loadgen_result(cmd, args)
        add_derived(result)
        dead = [t.log_path for t in stack.trees if t.poll() is not None]
        if dead:
            result['server_died'] = 'exited: %s' % ', '.join(os.path.relpath(p, HERE) for p in dead)
    except RuntimeError as err:
        result = {'fatal': str(err)}
    finally:
        stack.stop()
    text = ''.join(tree.output() for tree in stack.trees if tree.log_path.startswith(log_path[:-len('.stderr.log')]))
    result['server_stderr'] = text[-3000:]
    result['server_stderr_log'] = os.path.relpath(log_path, HERE)
    return result


def loadgen_result(cmd, args):
    """Run the loadgen command ``cmd`` (``args``: its scenario arguments); its JSON result, or
    ``{'fatal': why}``."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=loadgen_timeout(args))
    except subprocess.TimeoutExpired:
        return {'fatal': 'loadgen killed after %.0f s' % loadgen_timeout(args)}
    lines = [line for line in done.stdout.splitlines() if line.startswith('{')]
    return json.loads(lines[-1]) if lines else {'fatal': 'no JSON from loadgen: %s' % done.stderr[-500:]}


def add_derived(result):
    """Figures computed from the loadgen's: acks, deliveries and handshakes per second of server
    CPU (what they cost, whatever else the shared machine was doing) and the whole tree's loaded
    RSS per connection (idle; the headline is the RSS delta)."""
    cpu_share = result.get('server_cpu_pct', 0) / 100
    for rate, per_cpu in (('acks_per_s', 'acks_per_cpu_s'), ('deliveries_per_s', 'deliveries_per_cpu_s')):
        if rate in result and cpu_share > 0:
            result[per_cpu] = round(result[rate] / cpu_share)
    if result.get('scenario') == 'connect' and cpu_share * result.get('elapsed_s', 0) > 0:
        result['handshakes_per_cpu_s'] = round(result['ok'] / (cpu_share * result['elapsed_s']))
    if result.get('scenario') == 'idle' and result.get('alive_at_sample'):
        result['kib_per_conn_total'] = round(result['loaded_rss_mib'] * 1024 / result['alive_at_sample'], 2)


def run_timed(scenario, args, tag):
    """startup (one run per call) or respawn (one tree, several kills): a list of results."""
    log_path = os.path.join(RESULTS, '%s-cluster2w-%s.stderr.log' % (scenario, tag))
    if scenario == 'startup':
        results = [cluster.measure_startup(log_path)]
    else:
        results = cluster.measure_respawn(log_path, kills=args['kills'])
    with open(log_path, errors='replace') as log:
        text = log.read()
    for result in results:
        result['server_stderr'] = text[-3000:]
        result['server_stderr_log'] = os.path.relpath(log_path, HERE)
    return results


def established(port):
    """How many TCP connections to ``port`` are established (server side, /proc/net/tcp)."""
    with open('/proc/net/tcp') as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows if row[1].endswith(':%04X' % port) and row[3] == '01')


def cpu_seconds(pid):
    """User + system CPU seconds used so far by process ``pid``."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def parse_wrk(text):
    """requests/s, latency p50/p99 (ms) and errors from wrk's --latency report."""
    scale = {'us': 0.001, 'ms': 1.0, 's': 1000.0}
    result = {}
    match = re.search(r'Requests/sec:\s+([\d.]+)', text)
    if match:
        result['requests_per_s'] = round(float(match.group(1)))
    for pct, key in (('50', 'p50_ms'), ('99', 'p99_ms')):
        match = re.search(r'^\s+%s%%\s+([\d.]+)(us|ms|s)$' % pct, text, re.M)
        if match:
            result[key] = round(float(match.group(1)) * scale[match.group(2)], 3)
    errors = [int(n) for n in re.findall(r'(?:connect|read|write|timeout) (\d+)', text)]
    match = re.search(r'Non-2xx or 3xx responses: (\d+)', text)
    result['errors'] = sum(errors) + (int(match.group(1)) if match else 0)
    return result


def run_http(server, args, tag):
    """The http scenario: wrk against ``servers.py http-SERVER``; for gsc, while the loadgen
    holds ``args['idle']`` idle handshaken sockets on the same worker."""
    port = free_port()
    log_path = os.path.join(RESULTS, 'http-%s-%s.stderr.log' % (server, tag))
    url = 'http://%s:%d/' % (HOST, port)
    stack = cluster.Stack()
    result = {}
    try:
        tree = stack.add(cluster.Tree([sys.executable, SERVERS, 'http-' + server, '--port', str(port)],
                                      log_path))
        wait_accepting(tree.proc, port)
        if server == 'gsc':
            hold = WRK_WARMUP + args['duration'] + 30
            stack.add(cluster.Tree(
                ['node', LOADGEN, '--url', 'ws://%s:%d/socketcluster/' % (HOST, port), '--scenario', 'idle',
                 '--pid', str(tree.pid), '--idle-n', str(args['idle']), '--concurrency', '100',
                 '--settle', str(hold), '--label', 'idle'], log_path.replace('.stderr.log', '-idle.stderr.log')))
            deadline = time.monotonic() + START_TIMEOUT
            while established(port) < args['idle'] and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1)  # handshakes done
        wrk = [WRK, '-t1', '-c%d' % args['connections'], '--latency', url]
        subprocess.run(wrk[:1] + ['-d%ds' % WRK_WARMUP] + wrk[1:], capture_output=True,
                       timeout=WRK_WARMUP + 30)
        idle_sockets = established(port)
        cpu0, children0, t0 = cpu_seconds(tree.pid), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        done = subprocess.run(wrk[:1] + ['-d%ds' % args['duration']] + wrk[1:], capture_output=True,
                              text=True, timeout=args['duration'] + 30)
        elapsed, children1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        result = parse_wrk(done.stdout)
        result.update({
            'idle_sockets': idle_sockets if server == 'gsc' else 0,
            'server_cpu_pct': round(100 * (cpu_seconds(tree.pid) - cpu0) / elapsed, 1),
            'loadgen_cpu_pct': round(100 * (children1.ru_utime + children1.ru_stime
                                            - children0.ru_utime - children0.ru_stime) / elapsed, 1),
            'command': ' '.join(wrk[:1] + ['-d%ds' % args['duration']] + wrk[1:]),
        })
        if 'requests_per_s' not in result:
            result['fatal'] = 'no figure from wrk: %s' % (done.stdout + done.stderr)[-500:]
        if tree.poll() is not None:
            result['server_died'] = 'exit code %s' % tree.poll()
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        result = {'fatal': str(err)}
    finally:
        stack.stop()
    result['server_stderr'] = stack.trees[0].output()[-3000:] if stack.trees else ''
    result['server_stderr_log'] = os.path.relpath(log_path, HERE)
    return result


def add_ratios(scenario_rows, metric):
    """``ratio_vs_BASE`` on each row of one scenario: its median ``metric`` divided by BASE's."""
    by_server = {row['server']: row for row in scenario_rows}
    for base in BASES:
        if base not in by_server or len(scenario_rows) < 2:
            continue
        base_value = by_server[base]['median'].get(metric)
        for row in scenario_rows:
            value = row['median'].get(metric)
            row['ratio_vs_' + base] = value / base_value if value is not None and base_value else None


def median_of(runs):
    """The median of every numeric field over ``runs`` (one run: itself)."""
    keys = {k for run in runs for k, v in run.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: statistics.median(run[k] for run in runs if isinstance(run.get(k), (int, float)))
            for k in sorted(keys)}


def notes(scenario, runs):
    """Extra figures of the timed scenarios, for the table's last column."""
    ok = [run for run in runs if not run.get('fatal')]
    if not ok:
        return ''
    if scenario == 'startup':
        ready = [run['ready_ms'] for run in ok]
        banner = [run['banner_ms'] for run in ok if run.get('banner_ms') is not None]
        return 'n=%d, min %s max %s; banner median %s ms' % (
            len(ok), fmt(min(ready)), fmt(max(ready)), fmt(statistics.median(banner)) if banner else '-')
    if scenario == 'respawn':
        return ('n=%d kills, each (ms): %s; respawn logged median %s ms, new controller %s ms; '
                'probe failures %d of %d' % (
                    len(ok), ' / '.join(fmt(run['serving_ms']) for run in ok),
                    fmt(statistics.median(run['respawned_ms'] for run in ok if run.get('respawned_ms') is not None)),
                    fmt(statistics.median(run['controller_ms'] for run in ok if run.get('controller_ms') is not None)),
                    sum(run['probe_failures'] for run in ok), sum(run['probes'] for run in ok)))
    return ''


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
        if any(mark in run.get('server_stderr', '') for mark in ('ERROR', 'Traceback', '[Error]')):
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
    """The markdown table of ``rows`` (ratios against SocketCluster, the bare server and the one
    gsc worker of the same scenario and command)."""
    out = ['| scenario | server | result | p50 ms | p99 ms | server CPU % | loadgen CPU % | other CPU % | failures '
           '| ÷ sc | ÷ bare | ÷ gsc | notes |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        med, unit = row['median'], row['unit']
        value = med.get(row['metric'])
        failures = sum(med.get(k, 0) for k in FAILURE_FIELDS)
        ratios = ['-' if row.get('ratio_vs_' + base) is None else '%.2f' % row['ratio_vs_' + base]
                  for base in BASES]
        out.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            row['scenario'], row['server'], fmt_metric(value, unit),
            fmt(med.get('p50_ms'), 2), fmt(med.get('p99_ms'), 1), fmt(med.get('server_cpu_pct')),
            fmt(med.get('loadgen_cpu_pct')), fmt(med.get('other_cpu_pct')), fmt(failures),
            ratios[0], ratios[1], ratios[2], row.get('notes', '')))
    return '\n'.join(out)


# the columns of the SocketCluster comparison: (scenario, median field, heading, decimals)
VERSUS_SC = (('connect', 'handshakes_per_s', 'handshakes/s', 0),
             ('connect', 'handshakes_per_cpu_s', 'handshakes per server CPU s', 0),
             ('idle', 'kib_per_conn_rss', 'idle KiB/conn (RSS delta)', 1),
             ('idle', 'kib_per_conn_total', 'idle KiB/conn (whole RSS)', 1),
             ('rpc', 'acks_per_s', 'rpc acks/s', 0),
             ('rpc', 'acks_per_cpu_s', 'rpc acks per server CPU s', 0),
             ('rpc', 'p99_ms', 'rpc p99 ms', 1),
             ('fanout', 'deliveries_per_s', 'fan-out deliveries/s', 0),
             ('fanout', 'deliveries_per_cpu_s', 'fan-out deliveries per server CPU s', 0))


def versus_sc_table(rows):
    """One row per server, every figure with its ratio to SocketCluster's in the same command
    (a column is left out when its scenario did not run, or did not run SocketCluster)."""
    found = {(row['scenario'], row['server']): row['median'] for row in rows}
    columns = [col for col in VERSUS_SC if (col[0], 'sc') in found]
    if not columns:
        return ''
    servers = []
    for row in rows:
        if row['server'] not in servers and row['scenario'] in {col[0] for col in columns}:
            servers.append(row['server'])
    out = ['| server | %s |' % ' | '.join(col[2] for col in columns),
           '| --- |%s' % (' --- |' * len(columns))]
    for server in servers:
        cells = []
        for scenario, field, _, digits in columns:
            value = found.get((scenario, server), {}).get(field)
            base = found[(scenario, 'sc')].get(field)
            ratio = ' (%.2fx)' % (value / base) if value is not None and base and server != 'sc' else ''
            cells.append(fmt(value, digits) + ratio)
        out.append('| %s | %s |' % (server, ' | '.join(cells)))
    return '\n'.join(out)


def git(args):
    """Output of a git command in the repository ('' when git fails): what was measured."""
    try:
        return subprocess.run(['git'] + args, cwd=HERE, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ''


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='short runs with fewer connections (smoke run)')
    parser.add_argument('--only', default=None, help='comma-separated scenarios: %s (default: all; '
                        'startup and respawn only with --cluster)' % ','.join(SCENARIOS))
    parser.add_argument('--cluster', action='store_true',
                        help='also run.py trees: 2 workers + 1 broker (rpc, fanout, startup, respawn) '
                             'and two 1-worker instances through a private redis-server (fanout)')
    parser.add_argument('--repeat', type=int, default=1, help='runs per scenario and server; medians are reported')
    parser.add_argument('--server-env', action='append', default=[], metavar='NAME=VALUE',
                        help='set for the standalone gsc and bare servers only, e.g. PYTHONMALLOC=malloc '
                             '(repeatable)')
    args = parser.parse_args()
    SERVER_ENV.update(parse_settings(parser, '--server-env', args.server_env))
    if args.only is None:
        only = [s for s in SCENARIOS if args.cluster or s not in TIMED]
    else:
        only = [s.strip() for s in args.only.split(',') if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown or not only:
        parser.error('unknown scenario(s) %s; choose from %s' % (unknown, ', '.join(SCENARIOS)))
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error('--repeat must be 1..%d' % MAX_REPEAT)
    if not args.cluster and any(s in TIMED for s in only):
        parser.error('startup and respawn need --cluster')
    if 'http' in only and WRK is None:
        if args.only is not None:
            parser.error('the http scenario needs wrk: apt-get install -y wrk')
        only.remove('http')
        print('http scenario skipped: wrk is not installed (apt-get install -y wrk)')
    if not os.path.isdir(os.path.join(HERE, 'loadgen', 'node_modules', 'ws')):
        parser.error('run `npm ci --prefix bench/loadgen` first')
    if any('sc' in SCENARIOS[s][0] for s in only) and \
            not os.path.isdir(os.path.join(SC_DIR, 'node_modules', 'socketcluster')):
        parser.error('run `npm ci --prefix bench/socketcluster` first (or --only scenarios '
                     'without SocketCluster: startup, respawn, http)')
    raise_nofile()
    os.makedirs(RESULTS, exist_ok=True)

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    loadavg = os.getloadavg()
    print('gsc bench: %s%s, %s, repeat %d, load average %s%s' % (
        'quick' if args.quick else 'full', ' +cluster' if args.cluster else '', ','.join(only), args.repeat,
        ' '.join('%.2f' % x for x in loadavg),
        ', server env %s' % ' '.join(args.server_env) if args.server_env else ''), flush=True)
    rows = []
    for scenario in only:
        servers, metric, unit, full, quick = SCENARIOS[scenario]
        servers = [server for server in servers if args.cluster or server not in CLUSTER_SERVERS]
        runs = {server: [] for server in servers}
        repeat = args.repeat * (quick if args.quick else full).get('n', 1) if scenario in TIMED else args.repeat
        for rep in range(repeat):
            for server in servers:  # interleaved, so drift on the machine hits all alike
                if scenario in TIMED:
                    results = run_timed(scenario, quick if args.quick else full, str(rep + 1))
                elif scenario == 'http':
                    results = [run_http(server, quick if args.quick else full, str(rep + 1))]
                else:
                    results = [run_once(scenario, server, quick if args.quick else full, str(rep + 1))]
                runs[server].extend(results)
                print('  %s %s run %d: %s' % (scenario, server, rep + 1, ', '.join(
                    fmt_metric(result.get(metric), unit) for result in results)), flush=True)
        for server in servers:
            rows.append({'scenario': scenario, 'server': server, 'metric': metric, 'unit': unit,
                         'median': median_of(runs[server]), 'runs': runs[server],
                         'notes': notes(scenario, runs[server]), 'problems': problems(runs[server])})
        add_ratios(rows[-len(servers):], metric)

    print()
    print(table(rows))
    print()
    print(versus_sc_table(rows))
    for row in rows:
        for problem in row['problems']:
            print('\n%s %s: %s' % (row['scenario'], row['server'], problem))
    path = os.path.join(RESULTS, 'latest.json')
    with open(path, 'w') as f:
        json.dump({'started': started, 'quick': args.quick, 'repeat': args.repeat, 'cluster': args.cluster,
                   'git_head': git(['rev-parse', 'HEAD']), 'git_dirty': git(['status', '--short', '--', '../gsc', '../run.py']),
                   'loadavg_at_start': loadavg, 'ncpu': os.cpu_count(), 'rows': rows}, f, indent=1)
    print('\nwrote %s' % os.path.relpath(path))


if __name__ == '__main__':
    main()
