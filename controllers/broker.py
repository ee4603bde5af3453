"""The sample broker controller: answers the master's messages with what they carried."""

import logging

log = logging.getLogger(__name__)


def run(broker):
    """Called once in every broker before it starts listening."""
    log.info('   >> Broker PID: %s', broker.pid)
    broker.on('masterMessage', lambda data, respond: respond(None, data))
