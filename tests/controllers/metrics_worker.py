"""Worker controller of the health and metrics tests: tells each client its worker id;
'ask' makes the server emit 'question' with a callback (a client that never answers
causes an ack timeout); 'flood' sends ``data`` messages of 64 KiB (a client that does
not read is closed as a slow consumer)."""

CHUNK = 'x' * 65536


def run(worker):
    """Install the 'ask' and 'flood' handlers on every socket."""
    def on_connection(socket, status):
        socket.emit('worker', worker.id)

        def ask(_data, respond):
            socket.emit('question', 1, lambda err, answer: None)
            respond()

        def flood(count, respond):
            respond()
            for _ in range(count):
                socket.emit('chunk', CHUNK)
        socket.on('ask', ask)
        socket.on('flood', flood)
    worker.on('connection', on_connection)


def app(_environ, start_response):
    """The WSGI app of the tests: every path it gets answers 'from the app'."""
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'from the app']
