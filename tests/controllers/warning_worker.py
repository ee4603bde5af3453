"""Worker controller of the warning tests: counts the worker's ``warning`` events and tells
a client the count (rpc 'warnings')."""


def run(worker):
    """Count every warning; answer 'warnings' with ``{name: count}``."""
    counts = {}

    def count(warning):
        name = getattr(warning, 'name', type(warning).__name__)
        counts[name] = counts.get(name, 0) + 1
    worker.on('warning', count)
    worker.on('connection', lambda socket, status: socket.on(
        'warnings', lambda data, respond: respond(None, counts)))
