"""A small event emitter with SocketCluster's on/once/off/emit semantics."""


class EventEmitter:
    """Listeners per event name, called in registration order."""

    __slots__ = ('_listeners',)

    def __init__(self):
        self._listeners = {}

    def on(self, event, listener):
        """Call ``listener(*args)`` on every ``emit(event, *args)``; returns ``listener``."""
        self._listeners.setdefault(event, []).append(listener)
        return listener

    def once(self, event, listener):
        """Call ``listener`` on the next ``emit(event)`` only."""
        def wrapper(*args):
            self.off(event, wrapper)
            return listener(*args)
        wrapper.listener = listener
        return self.on(event, wrapper)

    def off(self, event=None, listener=None):
        """Remove one listener, every listener of ``event``, or every listener."""
        if event is None:
            self._listeners.clear()
        elif listener is None:
            self._listeners.pop(event, None)
        else:
            current = self._listeners.get(event)
            if current:
                kept = [fn for fn in current
                        if fn != listener and getattr(fn, 'listener', None) != listener]
                if kept:
                    self._listeners[event] = kept
                else:
                    del self._listeners[event]

    def emit(self, event, *args):
        """Call every listener of ``event``; True when there was one."""
        current = self._listeners.get(event)
        if not current:
            return False
        for listener in tuple(current):
            listener(*args)
        return True

    def listeners(self, event):
        """The listeners of ``event`` (a copy)."""
        return list(self._listeners.get(event, ()))

    def has_listeners(self, event):
        """True when ``event`` has at least one listener."""
        return bool(self._listeners.get(event))
