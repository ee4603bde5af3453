"""CPU cost of the live dashboard: ``python bench/dashboard_cost.py [--seconds S] [--workers N]``.

Starts the same idle cluster (N workers, 1 broker; tests/master_harness.py, 127.0.0.1) twice:
with the dashboard off, then on with one viewer (the Python client, logged in with the
password) watching the feed.  Reads the CPU seconds of the whole process tree over S seconds
of each and prints them as a percentage of one core, with the feed's message size.  Every
tree is killed by its process group.
"""

import argparse
import os
import sys
import time

import gevent

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))
sys.path.insert(0, HERE)

from gsc import client as gsc_client  # noqa: E402
from gsc.cluster import dashboard  # noqa: E402
from gsc.core import codec  # noqa: E402
from kit import free_port, group_members  # noqa: E402
from master_harness import MasterProcess  # noqa: E402
from run_all import cpu_seconds  # noqa: E402

PASSWORD = 'bench'


def tree_cpu(master):
    """CPU seconds used so far by every live process of ``master``'s tree."""
    return sum(cpu_seconds(pid) for pid in group_members(master.pgid))


def measure(workers, seconds, enabled):
    """``(CPU % of one core, feed message bytes or None)`` of one idle cluster."""
    port = free_port()
    master = MasterProcess({'workers': workers, 'brokers': 1, 'port': port, 'logLevel': 0,
                            'workerController': 'tests.controllers.metrics_worker',
                            'dashboard': enabled, 'dashboardPassword': PASSWORD})
    viewer = None
    try:
        master.ready(timeout=60)
        messages = []
        if enabled:
            viewer = gsc_client.create(port=port, auto_reconnect=False)
            viewer.invoke(dashboard.LOGIN_EVENT, {'password': PASSWORD})
            viewer.subscribe(dashboard.CHANNEL).watch(messages.append)
            viewer.wait_for('subscribe', 5)
        gevent.sleep(2)
        before, started = tree_cpu(master), time.monotonic()
        gevent.sleep(seconds)
        used = tree_cpu(master) - before
        size = len(codec.encode(messages[-1]).encode()) if messages else None
        return 100.0 * used / (time.monotonic() - started), size
    finally:
        if viewer is not None:
            viewer.destroy()
        master.cleanup()


def main():
    """Measure the cluster with the dashboard off, then on, and print both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=20)
    parser.add_argument('--workers', type=int, default=4)
    args = parser.parse_args()
    for enabled in (False, True):
        cpu, size = measure(args.workers, args.seconds, enabled)
        sys.stdout.write('dashboard %-3s: tree CPU %.2f%% of one core over %gs%s\n' % (
            'on' if enabled else 'off', cpu, args.seconds,
            ', feed message %d bytes' % size if size else ''))


if __name__ == '__main__':
    main()
