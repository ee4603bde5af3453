"""Broker controller of the cluster pub/sub tests: answers exchange.send with its id."""


def run(broker):
    """``message`` handler: answers ``{'broker': id, 'got': data}``."""
    broker.on('message', lambda data, respond: respond(None, {'broker': broker.id, 'got': data}))
