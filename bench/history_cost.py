"""The cost of channel history on fan-out: deliveries/s with and without history, same run.

    npm ci --prefix bench/loadgen
    python bench/history_cost.py [--quick] [--repeat N]

Each round starts a ``run.py`` tree of 1 worker + 1 broker twice, the same way bench/run_all.py's
``cluster1w`` does: once with ``channelHistory`` off, once with the loadgen's channel under
history (``{'bench': {'size': 100, 'ttl': 300}}``: the broker keeps and stamps every
publication; the worker writes ``offset``/``epoch`` in every ``#publish``), and runs bench/run_all.py's
fan-out loadgen against each.  The two modes alternate within each round, so the machine's
load is shared alike.  Prints the medians and the ratio history/none.
"""

import argparse
import os
import statistics
import sys

import cluster
import run_all

MODES = {'none': {}, 'history': {'bench': {'size': 100, 'ttl': 300}}}
FIGURES = ('deliveries_per_s', 'deliveries_per_cpu_s')


def run_mode(mode, args, tag):
    """One tree with ``mode``'s channelHistory and one fan-out loadgen run: its JSON result."""
    port = cluster.free_port()
    log_path = os.path.join(run_all.RESULTS, 'history-%s-%s.stderr.log' % (mode, tag))
    stack = cluster.Stack()
    extra = {'logLevel': run_all.CLUSTER_LOG_LEVEL, 'channelHistory': MODES[mode]}
    try:
        tree = cluster.start_cluster(stack, port, log_path, workers=1, extra=extra)
        cluster.wait_serving(tree, port)
        url = 'ws://%s:%d/socketcluster/' % (run_all.HOST, port)
        cmd = ['node', run_all.LOADGEN, '--url', url, '--scenario', 'fanout', '--pid', str(tree.pid),
               '--label', 'cluster1w-' + mode] + args
        result = run_all.loadgen_result(cmd, args)
    finally:
        stack.stop()
    run_all.add_derived(result)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='short runs with fewer subscribers')
    parser.add_argument('--repeat', type=int, default=3, help='rounds (each runs both modes)')
    options = parser.parse_args()
    if not 1 <= options.repeat <= run_all.MAX_REPEAT:
        parser.error('--repeat must be 1..%d' % run_all.MAX_REPEAT)
    run_all.raise_nofile()
    os.makedirs(run_all.RESULTS, exist_ok=True)
    args = run_all.SCENARIOS['fanout'][4 if options.quick else 3]
    results = {mode: [] for mode in MODES}
    for round_ in range(options.repeat):
        for mode in (MODES if round_ % 2 == 0 else reversed(list(MODES))):
            result = run_mode(mode, args, 'r%d' % round_)
            results[mode].append(result)
            print('round %d %-8s %s' % (round_ + 1, mode, '  '.join(
                '%s=%s' % (key, result.get(key, result.get('fatal'))) for key in FIGURES)))
    print('\nfan-out, 1 worker + 1 broker, loadgen %s; medians of %d rounds' % (' '.join(args), options.repeat))
    print('| figure | no history | history | history / none |\n|---|---|---|---|')
    failed = False
    for key in FIGURES:
        none = [r[key] for r in results['none'] if key in r]
        kept = [r[key] for r in results['history'] if key in r]
        if not none or not kept:
            failed = True
            continue
        a, b = statistics.median(none), statistics.median(kept)
        print('| %s | %.0f | %.0f | %.2f |' % (key, a, b, b / a))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
