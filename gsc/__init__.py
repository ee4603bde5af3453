"""gsc: SocketCluster for Python, on gevent.

The public face: the master (:class:`SocketCluster`), the worker's realtime server
(:class:`SCServer`, :func:`attach`, :func:`listen`, :class:`ServerSocket`), its HTTP
server, the exchange, SocketCluster's error classes, and the version.  The Python client
is :mod:`gsc.client`.
"""

from . import errors
from .errors import *  # noqa: F401,F403  (SocketCluster's error names are public API)
from .exchange import Exchange, SCChannel
from .http import HTTPServer
from .master import SocketCluster
from .server import SCServer, attach, listen
from .socket import ServerSocket

__version__ = '0.1.0'

__all__ = ['SocketCluster', 'SCServer', 'attach', 'listen', 'ServerSocket', 'HTTPServer',
           'Exchange', 'SCChannel', '__version__'] + errors.__all__
