"""The worker's realtime server: :class:`SCServer` with :func:`attach` and :func:`listen`.

- :mod:`~gsc.server.scserver`: SCServer, the realtime server of one worker (socketcluster-server).
- :mod:`~gsc.server.socket`: ServerSocket, one client connection.
- :mod:`~gsc.server.transport`: the frame layer, one WebSocket connection over a gevent socket.
- :mod:`~gsc.server.http`: the worker's HTTP server (WebSocket upgrades and the WSGI app).
- :mod:`~gsc.server.exchange`: channels, their local subscribers and the engine below.
- :mod:`~gsc.server.auth`: the JWT auth engine (sc-auth).
- :mod:`~gsc.server.server_options`: the options of an SCServer: defaults, spellings, validation.

The three names are imported on first use, so that importing one module of this layer (the
Python client imports the transport) does not import the whole server.
"""

import importlib

__all__ = ['SCServer', 'attach', 'listen']


def __getattr__(name):
    if name not in __all__:
        raise AttributeError('module %r has no attribute %r' % (__name__, name))
    value = getattr(importlib.import_module('.scserver', __name__), name)
    globals()[name] = value
    return value
