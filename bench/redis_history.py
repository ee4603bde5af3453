"""Publishes per second through the Redis engine: a plain channel, a history channel (the
Lua script: stream + offset + PUBLISH) and presence joins, against a private redis-server.

    python bench/redis_history.py [--count 20000] [--repeat 3]

One engine, one greenlet publishing in a loop and one subscriber engine counting what arrives
(so the figure includes delivery).  Run it on the commit before the history change for the
plain-channel "before" figure.
"""

import argparse
import logging
import os
import statistics
import sys
import time

import gevent

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))

from conftest import RedisServer  # noqa: E402  (the tests' private redis-server, by pid)
from gsc.engines.redis import RedisEngine  # noqa: E402

log = logging.getLogger('bench.redis_history')


def started_engine(url, **rules):
    """A started engine and the list its messages go to."""
    received = []
    ready = gevent.event.Event()
    engine = RedisEngine(url, **rules)
    engine.start(lambda *message: received.append(message), ready.set)
    ready.wait(5)
    return engine, received


def publishes_per_second(url, channel, count, rules):
    """Publishes/s of ``count`` publishes on ``channel``, delivered to a subscriber engine."""
    publisher, _ = started_engine(url, **rules)
    subscriber, received = started_engine(url, **rules)
    try:
        subscriber.subscribe(channel)
        gevent.sleep(0.1)
        started = time.perf_counter()
        for n in range(count):
            publisher.publish(channel, {'n': n, 'text': 'hello'})
        with gevent.Timeout(30):
            while len(received) < count:
                gevent.sleep(0.01)
        return count / (time.perf_counter() - started)
    finally:
        publisher.close()
        subscriber.close()


def joins_per_second(url, count, rules):
    """Presence joins/s (each a Lua script call) on one channel."""
    engine, _ = started_engine(url, **rules)
    try:
        started = time.perf_counter()
        for n in range(count):
            engine.presence_join('room/1', 's%d' % n, {'user': 'u', 'worker': 0}, lambda err: None)
        return count / (time.perf_counter() - started)
    finally:
        engine.close()


def main():
    """Print the medians of each scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--count', type=int, default=20000)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    rules = {}
    try:
        from gsc.core.history import HistoryRules
        from gsc.core.presence import PresenceRules
        rules = {'history_rules': HistoryRules({'room/*': {'size': 100, 'ttl': 300}}),
                 'presence_rules': PresenceRules({'room/*': {'maxMembers': 100000}})}
    except ImportError:
        log.info('no gsc.core.history here: the plain channel only')
    server = RedisServer().start()
    try:
        scenarios = [('plain channel', lambda: publishes_per_second(server.url, 'lobby', args.count, rules))]
        if rules:
            scenarios += [
                ('history channel', lambda: publishes_per_second(server.url, 'room/1', args.count, rules)),
                ('presence joins', lambda: joins_per_second(server.url, args.count, rules))]
        for name, run in scenarios:
            figures = [run() for _ in range(args.repeat)]
            log.info('%-16s %8.0f /s (median of %s)', name, statistics.median(figures),
                     ', '.join('%.0f' % f for f in figures))
    finally:
        server.stop()


if __name__ == '__main__':
    main()
