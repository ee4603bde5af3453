"""Worker controller of the wire tests: server-side publishes and emits of any value.

With the option ``wireMiddleware`` true, publishIn and publishOut middleware that let
everything through are installed, so publications take the middleware path.
"""

from gsc.core.protocol import UNDEFINED


def install(server, exchange, middleware=False):
    """Handlers on every socket of ``server``: 'serverPublish' {channel, data?} publishes
    through ``exchange`` (without data when the key is left out)."""
    def on_connection(socket, _status):
        def server_publish(data, respond):
            exchange.publish(data['channel'], data.get('data', UNDEFINED),
                             lambda err: respond(err))
        socket.on('serverPublish', server_publish)
    server.on('connection', on_connection)
    if middleware:
        server.add_middleware('publishIn', lambda req, next_: next_())
        server.add_middleware('publishOut', lambda req, next_: next_())


def run(worker):
    """Install the handlers on this worker."""
    install(worker.sc_server, worker.exchange, bool(worker.options.get('wireMiddleware')))
