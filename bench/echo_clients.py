"""The good clients of bench/hostile.py, in their own process so that the attacker's work does
not delay them: ``python bench/echo_clients.py --port P --clients 4 --rate 50 --seconds 120``.

Each client (tests/wsraw.py's RawClient) handshakes, then emits ``echo`` at a steady rate and
waits for each answer (at most ECHO_TIMEOUT). One line per event on stdout, flushed, with
CLOCK_MONOTONIC times (the same clock in every process of the machine):

    ready                      every client has handshaken
    sample T_SENT LATENCY_MS   an answered echo
    timeout T_SENT             no answer within ECHO_TIMEOUT
    closed T CODE              the server closed the client (it reconnects)

It stops after ``--seconds`` (or on SIGTERM).
"""

import argparse
import json
import os
import sys
import time

import gevent
from gevent import queue

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))

from wsraw import Closed, HandshakeRefused, RawClient  # noqa: E402

ECHO_TIMEOUT = 5.0
RECONNECT_PAUSE = 0.2


def say(*fields):
    """One output line."""
    sys.stdout.write(' '.join(str(f) for f in fields) + '\n')
    sys.stdout.flush()


def connect(url):
    """A handshaken RawClient."""
    client = RawClient(url)
    client.send(json.dumps({'event': '#handshake', 'data': {}, 'cid': 1}))
    wait_rid(client, 1, ECHO_TIMEOUT)
    return client


def wait_rid(client, cid, timeout):
    """Receive until the answer to ``cid``; queue.Empty on timeout, Closed on close."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise queue.Empty
        text = client.recv(timeout=left)
        if text == '#1':
            client.send('#2')
        elif text.startswith('{'):
            message = json.loads(text)
            if isinstance(message, dict) and message.get('rid') == cid:
                return


def run_client(url, rate, until, client):
    """Emit ``echo`` every 1/rate s until ``until``, reporting each answer's latency."""
    cid, period, next_at = 1, 1.0 / rate, time.monotonic()
    while time.monotonic() < until:
        gevent.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at + period, time.monotonic())
        cid += 1
        sent = time.monotonic()
        try:
            client.send(json.dumps({'event': 'echo', 'data': cid, 'cid': cid}))
            wait_rid(client, cid, min(ECHO_TIMEOUT, max(until - sent, 0.01)))
            say('sample', '%.6f' % sent, '%.3f' % ((time.monotonic() - sent) * 1000))
        except queue.Empty:
            say('timeout', '%.6f' % sent)
        except (Closed, OSError) as err:
            say('closed', '%.6f' % time.monotonic(), getattr(err, 'code', 1006))
            client.close()
            client = reconnect(url, until)
            if client is None:
                return
    client.close()


def reconnect(url, until):
    """A new handshaken client, or None when ``until`` passes first."""
    while time.monotonic() < until:
        gevent.sleep(RECONNECT_PAUSE)
        try:
            return connect(url)
        except (Closed, HandshakeRefused, OSError, queue.Empty):
            continue
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--clients', type=int, default=4)
    parser.add_argument('--rate', type=float, default=50.0, help='echo emits per second per client')
    parser.add_argument('--seconds', type=float, default=120.0, help='stop after this long')
    args = parser.parse_args()
    url = 'ws://127.0.0.1:%d/socketcluster/' % args.port
    until = time.monotonic() + args.seconds
    clients = [connect(url) for _ in range(args.clients)]
    say('ready')
    gevent.joinall([gevent.spawn(run_client, url, args.rate, until, c) for c in clients],
                   timeout=args.seconds + ECHO_TIMEOUT)


if __name__ == '__main__':
    main()
