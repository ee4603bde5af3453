"""A bounded soak of one in-process gsc server: rounds of connections that handshake, subscribe
and close; prints the server's resident memory and its registries after each round.

    .venv/bin/python bench/soak.py --rounds 12 --connections 300

Memory that keeps growing round after round, or registries that do not return to zero, is a
leak. Loopback only; every loop is bounded by --rounds and --connections.
"""

import argparse
import gc
import json
import os
import sys

import gevent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from gsc.server import listen  # noqa: E402
from wsraw import RawClient  # noqa: E402


def resident_kib():
    """Resident memory of this process in KiB."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


def one_round(server, connections, channels):
    """Open ``connections`` sockets (handshake + one subscription each), publish, close them all."""
    clients = []
    for i in range(connections):
        client = RawClient('ws://127.0.0.1:%d/socketcluster/' % server.port)
        client.send('{"event":"#handshake","data":{},"cid":1}')
        client.recv()
        client.send(json.dumps({'event': '#subscribe', 'data': {'channel': 'ch%d' % (i % channels)},
                                'cid': 2}))
        client.recv()
        clients.append(client)
    server.exchange.publish('ch0', 'x')
    for client in clients:
        client.close()
    gevent.sleep(0.3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=12)
    parser.add_argument('--connections', type=int, default=300)
    parser.add_argument('--channels', type=int, default=50)
    args = parser.parse_args()
    server = listen(0, {})
    server.on('warning', lambda warning: None)  # every close without a close frame warns
    print('round | resident KiB | clients | pending | channels with sockets | engine channels')
    for number in range(args.rounds):
        one_round(server, args.connections, args.channels)
        gc.collect()
        print('%5d | %12d | %7d | %7d | %21d | %15d' % (
            number, resident_kib(), server.clients_count, server.pending_clients_count,
            len(server.exchange._sockets), len(server.exchange._engine_state)))


if __name__ == '__main__':
    main()
