"""The broker process: lifecycle and IPC with the master (server-api.md §7.1).

Start-up: the broker controller's ``run(broker)`` (when one is named), then
:meth:`SCBroker.listen` on its unix socket ``<socketDir>/b<id>``, then
``listening`` to the master (-> ``brokerStart``).  The pub/sub relay and the
key/value store that serve the workers plug into :meth:`SCBroker.listen`.
"""

import logging
import os

from . import controllers
from .process import ClusterMember

log = logging.getLogger(__name__)


class SCBroker(ClusterMember):
    """A broker process (``broker`` in the broker controller's ``run(broker)``).

    Attributes: ``id``, ``type`` ('broker'), ``options`` (the master's options),
    ``instance_id``, ``secret_key``, ``socket_path``, ``ipc_ack_timeout``.
    Events: ``masterMessage(data, respond)``, ``warning``.
    """

    type = 'broker'
    origin_type = 'Broker'
    message_type = 'brokerMessage'

    def __init__(self, id_, options, fd, socket_path):
        ClusterMember.__init__(self, id_, options, fd)
        self.instance_id = options['instanceId']
        self.secret_key = options['secretKey']
        self.ipc_ack_timeout = options['ipcAckTimeout']
        self.socket_path = socket_path
        self.on('error', lambda err: self.report('error', err))
        self.on('warning', lambda warning: self.report('warning', warning))

    def start(self):
        """Run the controller, listen, then tell the master (``listening``)."""
        controllers.run('brokerController', self.options.get('brokerController'),
                        self.options['paths']['appDirPath'], self)
        self.listen()
        self.set_ready()
        self.channel.send('listening', {'id': self.id, 'pid': self.pid})

    def listen(self):
        """Prepare ``socket_path`` for the workers' connections (a stale socket file is removed).

        The broker's pub/sub relay and key/value store start serving here.
        """
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass


def main(id_, options, fd, socket_path):
    """Entry point of a forked broker process; returns its exit code."""
    return SCBroker(id_, options, fd, socket_path).serve()
