"""gsc: SocketCluster for Python, on gevent.

The public face: the master (:class:`SocketCluster`), the worker's realtime server
(:class:`SCServer`, :func:`attach`, :func:`listen`, :class:`ServerSocket`), its HTTP
server, the exchange, SocketCluster's error classes, and the version.  The Python client
is :mod:`gsc.client`; the command line is :mod:`gsc.cli`.

Everything but the errors is imported on first use, so ``python -m gsc`` can apply
gevent's monkey patching before gsc's modules import the standard library.
"""

import importlib

from . import errors
from .errors import *  # noqa: F401,F403  (SocketCluster's error names are public API)
from .errors import TimeoutError  # noqa: F401,A004  (gsc.TimeoutError; not in __all__: no shadowing)
from .version import __version__

_LAZY = {'SocketCluster': 'cluster.master', 'SCServer': 'server.scserver',
         'attach': 'server.scserver', 'listen': 'server.scserver', 'ServerSocket': 'server.socket',
         'HTTPServer': 'server.http', 'Exchange': 'server.exchange', 'SCChannel': 'server.exchange'}

__all__ = ['SocketCluster', 'SCServer', 'attach', 'listen', 'ServerSocket', 'HTTPServer',
           'Exchange', 'SCChannel', '__version__'] + errors.__all__


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError('module %r has no attribute %r' % (__name__, name))
    value = getattr(importlib.import_module('.' + module, __name__), name)
    globals()[name] = value
    return value
