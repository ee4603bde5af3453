"""Broker controller of tests/test_behaviours_cluster.py (FX-INT's reporting broker): on a
master message ``{'report': True}`` it answers the channels its subscription table holds (all
worker connections) and ``data_map.get_all()``."""

import os


def run(broker):
    """Answer ``report`` with ``{'id', 'pid', 'channels', 'data'}``."""
    def on_master_message(data, respond):
        channels = set()
        for table in broker.subscriptions.values():
            channels.update(table)
        channels.update(getattr(broker.server, '_subscribers', {}))  # the relay's own index too
        respond(None, {'id': broker.id, 'pid': os.getpid(), 'channels': sorted(channels),
                       'data': broker.data_map.get_all()})
    broker.on('masterMessage', on_master_message)
