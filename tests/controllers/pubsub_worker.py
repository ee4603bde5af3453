"""Worker controller of the cluster pub/sub tests: tells each client its worker id and
exposes the exchange's key/value store and broker messages over rpc."""


def run(worker):
    """Handlers: 'kv' runs an exchange key/value call; 'send' goes to the broker controllers."""
    def on_connection(socket, status):
        socket.emit('worker', worker.id)

        def kv(data, respond):
            method = getattr(worker.exchange, data['method'])
            try:
                respond(None, method(*data.get('args', [])))
            except Exception as exc:
                respond(exc)
        socket.on('kv', kv)
        socket.on('send', lambda data, respond: respond(None, worker.exchange.send(data, 1)))
        socket.on('boom', lambda data, respond: data['missing'])  # a handler bug: KeyError
    worker.on('connection', on_connection)
