"""Broker kill -9 under publication on a history channel: the gap and the time to resume.

    .venv/bin/python bench/restart_gap.py [--kills 5] [--rounds 2] [--base ../main]

One cluster of 2 workers + 1 broker (tests/master_harness.py, channel ``room/a`` with
``channelHistory`` size 2000 and ``publishOffsets``), 8 official clients
(tests/js/subscribers.js) subscribed, one publisher on each worker publishing every 4 ms;
then ``--kills`` kill -9s of the broker, 1.5 s apart. Per kill and subscriber:

* resume: the time from the kill to its first publication of the new epoch;
* complete: to the time it holds every offset from 1 up to that first one (the same as
  resume when the first is offset 1, else never: a gap);
* gaps: the subscribers whose new epoch did not start at offset 1.

With ``--base`` the same runs alternate between this checkout and another one (its gsc and
its tests/master_driver.py; the clients are this checkout's), ``--rounds`` times each, and the
ratios this / base are printed.  Every process tree is killed by its process group.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLIENTS_JS = os.path.join(ROOT, 'tests', 'js', 'subscribers.js')
CLIENTS = 8
OPTIONS = {'workers': 2, 'brokers': 1, 'workerController': 'tests.controllers.history_worker',
           'channelHistory': {'room/*': {'size': 2000, 'publishOffsets': True}}}


class Lines:
    """The JSON lines of a process's stdout, each with its arrival time."""

    def __init__(self, proc):
        self.lines = []
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), json.loads(line)))

    def wait(self, predicate, timeout=20):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError('timed out')
            time.sleep(0.01)


def one_run(root, kills):
    """Per kill: [(resume s, complete s or None)] of every subscriber, with ``root``'s gsc."""
    sys.path.insert(0, os.path.join(root, 'tests'))
    import master_harness
    port = master_harness.free_port()
    master = master_harness.MasterProcess(dict(OPTIONS, port=port))
    node = subprocess.Popen(['node', CLIENTS_JS, str(port), 'room/a', str(CLIENTS), '4'],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, SCENARIO_TIMEOUT='120'))
    try:
        master.ready(timeout=30)
        out = Lines(node)
        messages = lambda: [(t, l['client'], l['data']) for t, l in out.lines if l['event'] == 'message']
        workers = lambda: {l['client']: l['data']['id'] for _, l in out.lines if l['event'] == 'worker'}
        out.wait(lambda: len(workers()) == CLIENTS and
                 sum(l['event'] == 'subscribe' for _, l in out.lines) == CLIENTS)
        spread = workers()
        publishers = sorted({min(i for i, w in spread.items() if w == worker) for worker in set(spread.values())})
        node.stdin.write(json.dumps({'publish': publishers}) + '\n')
        node.stdin.flush()
        broker = master.expect('brokerStart', data={'id': 0})['data']
        results = []
        for _ in range(kills):
            time.sleep(1.5)
            old = {c: d['epoch'] for _, c, d in messages()}
            killed = time.monotonic()
            os.kill(broker['pid'], signal.SIGKILL)
            broker = master.expect('brokerStart', data={'id': 0, 'respawn': True}, timeout=20)['data']
            out.wait(lambda: all(any(t > killed and d['epoch'] != old.get(c) for t, c2, d in messages()
                                     if c2 == c) for c in range(CLIENTS)))
            per_client = []
            for c in range(CLIENTS):
                first = next((t, d) for t, c2, d in messages() if c2 == c and t > killed and
                             d['epoch'] != old.get(c))
                per_client.append((first[0] - killed, first[0] - killed if first[1]['offset'] == 1 else None))
            results.append(per_client)
        return results
    finally:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
        master.cleanup()


def summary(runs):
    """Figures over every kill of ``runs``: resume max/p50 (ms), gaps, complete max (ms)."""
    kills = [per_client for run in runs for per_client in run]
    resume_max = [max(r for r, _ in kill) for kill in kills]
    resume_p50 = [statistics.median(r for r, _ in kill) for kill in kills]
    gaps = sum(c is None for kill in kills for _, c in kill)
    whole = [max(c for _, c in kill) for kill in kills if all(c is not None for _, c in kill)]
    return {'kills': len(kills), 'subscriber_epochs': len(kills) * CLIENTS, 'gaps': gaps,
            'resume_max_ms': round(statistics.median(resume_max) * 1000, 1),
            'resume_p50_ms': round(statistics.median(resume_p50) * 1000, 1),
            'complete_max_ms': round(statistics.median(whole) * 1000, 1) if whole else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--kills', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--base', help='another checkout to compare with')
    parser.add_argument('--one', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.kills)))
        return
    roots = [('this', ROOT)] + ([('base', os.path.abspath(args.base))] if args.base else [])
    runs = {name: [] for name, _ in roots}
    for _ in range(args.rounds):
        for name, root in roots:
            out = subprocess.run([sys.executable, __file__, '--one', root, '--kills', str(args.kills)],
                                 cwd=root, check=True, capture_output=True, text=True, timeout=300)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    figures = {name: summary(made) for name, made in runs.items()}
    print(json.dumps(figures, indent=1))
    if args.base:
        this, base = figures['this'], figures['base']
        for key in ('resume_max_ms', 'resume_p50_ms'):
            print('%s this/base: %.2f' % (key, this[key] / base[key]))


if __name__ == '__main__':
    main()
