"""gsc: SocketCluster for Python, on gevent.

The public face: the worker's realtime server (:class:`SCServer`, :func:`attach`,
:func:`listen`), its HTTP server, the exchange, the errors, and the version.
"""

from .errors import *  # noqa: F401,F403  (SocketCluster's error names are public API)
from .exchange import Exchange, SCChannel
from .http import HTTPServer
from .master import SocketCluster
from .server import SCServer, attach, listen
from .socket import ServerSocket

__version__ = '0.1.0'
