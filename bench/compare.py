"""Before and after: the same scenarios against gsc from two checkouts, in one run.

    git worktree add --detach /tmp/before 601f4af^     # main when issue 10 was filed
    python bench/compare.py --a /tmp/before [--b .] [--repeat N] [--quick] [--only rpc,fanout]

Tree A (``--a``, a checkout of the "before" commit) and tree B (default this
checkout) each serve as a standalone worker (``bench/servers.py gsc --tree T``) and as a
``run.py`` tree of 1 worker + 1 broker (T's run.py, the worker controller
bench/compare_controller.py of this checkout for both). Every server's process tree imports
its own checkout's gsc; the gsc a server imported is checked on every start (its log line, or
its ``gscFile`` RPC) and printed once. The load is this checkout's bench/loadgen, one
scenario at a time (bench/run_all.py's run_once: start, loadgen, stop by process group). Rounds
alternate the order (A then B, then B then A) so drift on a shared machine hits both alike.
Prints medians, B/A per scenario and the command line; writes bench/results/compare.json.
"""

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time

import cluster
import run_all

HERE = os.path.dirname(os.path.abspath(__file__))
CONTROLLER = os.path.join(HERE, 'compare_controller.py')
SERVERS = ('gsc', 'cluster1w')
SCENARIO_NAMES = ('rpc', 'fanout', 'connect', 'idle')
# the figures compared: (scenario, field, heading, True when higher is better, decimals)
FIGURES = (('rpc', 'acks_per_s', 'rpc acks/s', True, 0),
           ('rpc', 'p99_ms', 'rpc p99 ms', False, 1),
           ('rpc', 'acks_per_cpu_s', 'rpc acks per server CPU s', True, 0),
           ('fanout', 'deliveries_per_s', 'fan-out deliveries/s', True, 0),
           ('fanout', 'deliveries_per_cpu_s', 'fan-out deliveries per server CPU s', True, 0),
           ('connect', 'handshakes_per_s', 'connect handshakes/s', True, 0),
           ('idle', 'kib_per_conn_rss', 'idle KiB/conn (RSS delta)', False, 1))
TOLERANCE = 0.05  # issue 10 item 6: within 5 % of today's
GSC_MARK = 'serving gsc from '


class TreeServers:
    """Starts bench servers whose processes import checkout ``root``'s gsc (run_once's
    ``start``); remembers the gsc file each kind of server reported."""

    def __init__(self, label, root):
        self.label, self.root = label, root
        self.gsc_files = {}

    def __call__(self, stack, server, port, log_path):
        if server == 'gsc':
            tree = stack.add(cluster.Tree([sys.executable, run_all.SERVERS, 'gsc', '--port', str(port),
                                           '--tree', self.root], log_path))
            run_all.wait_accepting(tree.proc, port)
            gsc_file = logged_gsc_file(tree)
        elif server == 'cluster1w':
            tree = cluster.start_cluster(stack, port, log_path, workers=1, root=self.root,
                                         controller=CONTROLLER,
                                         extra={'logLevel': run_all.CLUSTER_LOG_LEVEL})
            cluster.wait_serving(tree, port)
            try:
                gsc_file = cluster.probe(port, [('gscFile', None)])[1]
            except (OSError, ValueError) as err:
                raise RuntimeError('gscFile RPC failed: %s' % err) from err
        else:
            raise ValueError(server)
        self.check(server, gsc_file)
        return tree.pid, []

    def check(self, server, gsc_file):
        """Raise unless ``gsc_file`` is this checkout's gsc; print it the first time."""
        expected = os.path.join(os.path.realpath(self.root), 'gsc', '__init__.py')
        if not gsc_file or os.path.realpath(gsc_file) != expected:
            raise RuntimeError('tree %s %s serves gsc from %r, not %s' % (self.label, server, gsc_file, expected))
        if server not in self.gsc_files:
            self.gsc_files[server] = gsc_file
            print('  tree %s %s imports %s' % (self.label, server, gsc_file), flush=True)


def logged_gsc_file(tree, timeout=5.0):
    """The gsc file the standalone server logged at start (servers.py --tree)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, text in list(tree.lines):
            if GSC_MARK in text:
                return text.split(GSC_MARK, 1)[1].strip()
        time.sleep(0.05)
    return None


def git_head(root):
    """The commit checked out in ``root`` (+ ' dirty' when gsc/ or run.py differ from it)."""
    def git(*args):
        try:
            return subprocess.run(['git', '-C', root] + list(args), capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ''
    dirty = git('status', '--short', '--', 'gsc', 'run.py')
    return git('rev-parse', '--short', 'HEAD') + (' dirty' if dirty else '')


def within(ratio, higher_is_better):
    """'yes' when ``ratio`` (B/A) loses at most TOLERANCE, else 'NO'; '-' when unknown."""
    if ratio is None:
        return '-'
    ok = ratio >= 1 - TOLERANCE if higher_is_better else ratio <= 1 + TOLERANCE
    return 'yes' if ok else 'NO'


def compare_rows(medians, runs):
    """One row per (figure, server): A and B medians, every run's value, B/A, the verdict."""
    rows = []
    for scenario, field, heading, higher, digits in FIGURES:
        for server in SERVERS:
            if (scenario, server, 'A') not in medians:
                continue
            a = medians[(scenario, server, 'A')].get(field)
            b = medians[(scenario, server, 'B')].get(field)
            ratio = b / a if a and b is not None else None
            rows.append({'figure': heading, 'field': field, 'server': server, 'a': a, 'b': b,
                         'ratio': ratio, 'within_5pct': within(ratio, higher), 'digits': digits,
                         'a_runs': [r.get(field) for r in runs[(scenario, server, 'A')]],
                         'b_runs': [r.get(field) for r in runs[(scenario, server, 'B')]]})
    return rows


def table(rows):
    """The markdown table of :func:`compare_rows`."""
    out = ['| figure | server | A median | B median | B/A | within 5 % | A runs | B runs |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        digits = row['digits']
        out.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
            row['figure'], row['server'], run_all.fmt(row['a'], digits), run_all.fmt(row['b'], digits),
            '-' if row['ratio'] is None else '%.3f' % row['ratio'], row['within_5pct'],
            ' / '.join(run_all.fmt(v, digits) for v in row['a_runs']),
            ' / '.join(run_all.fmt(v, digits) for v in row['b_runs'])))
    return '\n'.join(out)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--a', required=True, help='tree A, a checkout of the "before" commit '
                        '(git worktree add --detach /tmp/before 601f4af^)')
    parser.add_argument('--b', default=cluster.ROOT, help='tree B, the "after" checkout (default: this one)')
    parser.add_argument('--repeat', type=int, default=1, help='rounds (A and B once each per round); medians')
    parser.add_argument('--quick', action='store_true', help="bench/run_all.py's --quick workloads (smoke run)")
    parser.add_argument('--only', default=','.join(SCENARIO_NAMES),
                        help='comma-separated scenarios of %s' % ','.join(SCENARIO_NAMES))
    args = parser.parse_args()
    args.only = [s.strip() for s in args.only.split(',') if s.strip()]
    if not args.only or any(s not in SCENARIO_NAMES for s in args.only):
        parser.error('--only: choose from %s' % ','.join(SCENARIO_NAMES))
    if not 1 <= args.repeat <= run_all.MAX_REPEAT:
        parser.error('--repeat must be 1..%d' % run_all.MAX_REPEAT)
    for name in ('a', 'b'):
        root = os.path.abspath(getattr(args, name))
        if not os.path.isfile(os.path.join(root, 'run.py')) or not os.path.isdir(os.path.join(root, 'gsc')):
            parser.error('--%s %s is not a gsc checkout (no run.py and gsc/)' % (name, root))
        setattr(args, name, root)
    if not os.path.isdir(os.path.join(HERE, 'loadgen', 'node_modules', 'ws')):
        parser.error('run `npm ci --prefix bench/loadgen` first')
    return args


def main():
    args = parse_args()
    command = ' '.join(shlex.quote(part) for part in [os.path.relpath(sys.executable)] + sys.argv)
    run_all.raise_nofile()
    os.makedirs(run_all.RESULTS, exist_ok=True)
    trees = {'A': TreeServers('A', args.a), 'B': TreeServers('B', args.b)}
    heads = {label: git_head(tree.root) for label, tree in trees.items()}
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    load_before = os.getloadavg()
    print('$ %s' % command)
    for label, tree in trees.items():
        print('tree %s: %s (%s)' % (label, tree.root, heads[label]))
    print('%s, repeat %d, %s; load average %s' % ('quick' if args.quick else 'full', args.repeat,
          ','.join(args.only), ' '.join('%.2f' % x for x in load_before)), flush=True)

    runs = {(s, server, label): [] for s in args.only for server in SERVERS for label in trees}
    for rnd in range(args.repeat):
        order = ('A', 'B') if rnd % 2 == 0 else ('B', 'A')
        for scenario in args.only:
            _, metric, unit, full, quick = run_all.SCENARIOS[scenario]
            for server in SERVERS:
                for label in order:
                    result = run_all.run_once(scenario, server, quick if args.quick else full,
                                          'cmp%s%d' % (label, rnd + 1), start=trees[label])
                    runs[(scenario, server, label)].append(result)
                    print('  round %d %s %s %s: %s' % (rnd + 1, scenario, server, label,
                                                       run_all.fmt_metric(result.get(metric), unit)), flush=True)

    medians = {key: run_all.median_of(results) for key, results in runs.items()}
    rows = compare_rows(medians, runs)
    load_after = os.getloadavg()
    print('\n$ %s' % command)
    print('A = %s (%s), B = %s (%s); load average before %s, after %s\n' % (
        args.a, heads['A'], args.b, heads['B'], ' '.join('%.2f' % x for x in load_before),
        ' '.join('%.2f' % x for x in load_after)))
    print(table(rows))
    for (scenario, server, label), results in runs.items():
        for problem in run_all.problems(results):
            print('\n%s %s %s: %s' % (scenario, server, label, problem))
    path = os.path.join(run_all.RESULTS, 'compare.json')
    with open(path, 'w') as f:
        json.dump({'command': command, 'started': started, 'quick': args.quick, 'repeat': args.repeat,
                   'trees': {label: {'root': tree.root, 'head': heads[label], 'gsc_files': tree.gsc_files}
                             for label, tree in trees.items()},
                   'loadavg_before': load_before, 'loadavg_after': load_after, 'ncpu': os.cpu_count(),
                   'rows': rows, 'runs': {' '.join(key): results for key, results in runs.items()}},
                  f, indent=1)
    print('\nwrote %s' % os.path.relpath(path))


if __name__ == '__main__':
    main()
