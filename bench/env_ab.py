"""One gsc worker with and without some environment, alternating: ``python bench/env_ab.py
--env PYTHONMALLOC=malloc [--only rpc,fanout,connect,idle] [--rounds 4]``.

For a setting an operator makes outside gsc (the allocator, a hash seed, ...): each round runs
every scenario against the standalone gsc server (``bench/servers.py gsc``) once without and once
with the settings (``run_all.SERVER_ENV``: the server's process only, never the loadgen), the order
swapped every round so that drift on a shared machine hits both alike; then the medians and
with/without per scenario, for the scenario's figure and per second of server CPU.
"""

import argparse
import statistics

import run_all

SCENARIO_NAMES = ('rpc', 'fanout', 'connect', 'idle')


def per_cpu_field(metric):
    """The loadgen's per-server-CPU-second field of ``metric`` (None where it has none)."""
    return metric.replace('_per_s', '_per_cpu_s') if metric.endswith('_per_s') else None


def measure(scenario, rounds, settings):
    """``{'without': [result, ...], 'with': [...]}`` of ``rounds`` alternating runs."""
    args = run_all.SCENARIOS[scenario][3]
    results = {'without': [], 'with': []}
    for number in range(rounds):
        order = [('without', {}), ('with', settings)]
        for side, env in (reversed(order) if number % 2 else order):
            run_all.SERVER_ENV.clear()
            run_all.SERVER_ENV.update(env)
            try:
                results[side].append(run_all.run_once(scenario, 'gsc', args, 'ab%d' % (number + 1)))
            finally:
                run_all.SERVER_ENV.clear()
    return results


def median(results, field):
    """The median of ``field`` over the runs that have it (None if none has)."""
    values = [result[field] for result in results if result.get(field) is not None]
    return statistics.median(values) if values else None


def figure(value):
    """A median as printed: whole above 100, two decimals below."""
    if value is None:
        return '-'
    return '{:,.0f}'.format(value) if value >= 100 else '%.2f' % value


def report(scenario, results):
    """Markdown rows: the figure and its per-CPU twin, without, with, with/without."""
    metric = run_all.SCENARIOS[scenario][1]
    rows = []
    for field in (metric, per_cpu_field(metric)):
        if field is None:
            continue
        without, with_ = median(results['without'], field), median(results['with'], field)
        ratio = '%.2f' % (with_ / without) if without and with_ is not None else '-'
        rows.append('| %s | %s | %s | %s | %s |' % (scenario, field, figure(without), figure(with_), ratio))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--env', action='append', required=True, metavar='NAME=VALUE',
                        help='a setting of the "with" runs (repeatable)')
    parser.add_argument('--only', default=','.join(SCENARIO_NAMES))
    parser.add_argument('--rounds', type=int, default=4, help='alternating rounds (1-10)')
    args = parser.parse_args()
    settings = run_all.parse_settings(parser, '--env', args.env)
    scenarios = [name.strip() for name in args.only.split(',') if name.strip()]
    if not scenarios or any(name not in SCENARIO_NAMES for name in scenarios):
        parser.error('--only takes some of %s' % ', '.join(SCENARIO_NAMES))
    if not 1 <= args.rounds <= 10:
        parser.error('--rounds must be 1..10')
    run_all.raise_nofile()
    lines = ['| scenario | figure | without | with %s | with / without |' % ' '.join(args.env),
             '| --- | --- | --- | --- | --- |']
    for scenario in scenarios:
        results = measure(scenario, args.rounds, settings)
        for side in ('without', 'with'):
            print('  %s %s: %s' % (scenario, side, ', '.join(
                str(result.get(run_all.SCENARIOS[scenario][1])) for result in results[side])), flush=True)
        lines.extend(report(scenario, results))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
