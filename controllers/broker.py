"""The sample broker controller: logs the channels it relays and answers the workers.

A broker hears ``subscribe(channel)`` when a channel gets its first subscriber on some
worker and ``unsubscribe(channel)`` when its last one is gone; ``message(data, respond)``
is a worker's ``exchange.send(data)`` (the sample answers ``{'type': 'channels'}``).
"""

import logging

log = logging.getLogger(__name__)


def run(broker):
    """Called once in every broker before it starts listening."""
    log.info('Broker %s is up (PID %s)', broker.id, broker.pid)
    broker.on('subscribe', lambda channel: log.info('broker %s: %s is in use', broker.id, channel))
    broker.on('unsubscribe', lambda channel: log.info('broker %s: %s is idle', broker.id, channel))

    def on_message(data, respond):
        if isinstance(data, dict) and data.get('type') == 'channels':
            channels = {name for names in broker.subscriptions.values() for name in names}
            respond(None, {'broker': broker.id, 'channels': sorted(channels)})
        else:
            respond(None, {'broker': broker.id, 'got': data})

    broker.on('message', on_message)
    broker.on('masterMessage', lambda data, respond: respond(None, data))
