"""The worker's realtime server: :class:`SCServer` with :func:`attach` and :func:`listen`.

- :mod:`~gsc.server.scserver`: SCServer, the realtime server of one worker (socketcluster-server).
- :mod:`~gsc.server.socket`: ServerSocket, one client connection.
- :mod:`~gsc.server.http`: the worker's HTTP server (WebSocket upgrades and the WSGI app).
- :mod:`~gsc.server.exchange`: channels, their local subscribers and the engine below.
- :mod:`~gsc.server.auth`: the JWT auth engine (sc-auth).

The frames are carried by :mod:`gsc.transport`, which the Python client shares; the options
are those of scope ``server`` in :mod:`gsc.core.options`.
"""

from .scserver import SCServer, attach, listen

__all__ = ['SCServer', 'attach', 'listen']
