"""The exchange's presence: ``presence(channel)``, the answer to a ``#presence`` query, and
the joins, leaves and their events for the sockets of channels that track presence
(docs/presence.md).

:class:`ExchangePresence` is a mixin of :class:`gsc.server.exchange.Exchange`.
"""

from ..core.presence import events_channel, member_user, no_presence, owner_channel


class ExchangePresence:
    """Presence of an :class:`~gsc.server.exchange.Exchange` (a mixin)."""

    def presence(self, channel, callback=None):
        """The members of the presence channel ``channel``: ``{socket_id: {'user', 'worker'}}``
        (``callback(err, members)``, or block and return); BrokerError without a policy."""
        if self.presence_rules.policy(channel) is None:
            return self._call(lambda done: done(no_presence(channel)), callback)
        return self._call(lambda done: self.engine.presence(channel, done), callback)

    def answer_presence(self, channel, respond):
        """Answer a client's ``#presence``: ``{'members': [{'socketId', 'user'}, ...]}``, at
        most the channel's ``maxMembers`` of them."""
        policy = self.presence_rules.policy(channel)
        if policy is None:
            respond(no_presence(channel))
            return

        def answered(err, members):
            if err:
                respond(err)
                return
            items = list((members or {}).items())[:policy.max_members]
            respond(None, {'members': [{'socketId': socket_id, 'user': info.get('user')}
                                       for socket_id, info in items]})
        self.engine.presence(channel, answered)

    def _join_presence(self, socket, channel, policy, join_leave, err, subscribed):
        """The socket's channel subscription is up: listen for its events (``join_leave``),
        then join its members; ``subscribed(err)`` once joined."""
        if err or not socket.channel_subscriptions.get(channel):
            subscribed(err)
            return
        if join_leave:
            self._listen_presence(socket, channel, lambda err: self._send_join(
                socket, channel, policy, err, subscribed))
        else:
            self._send_join(socket, channel, policy, None, subscribed)

    def _send_join(self, socket, channel, policy, err, subscribed):
        if err or not socket.channel_subscriptions.get(channel):
            self._abandon_join(socket, channel)
            subscribed(err)
            return
        info = {'user': member_user(socket.auth_token, policy.user_field), 'worker': self.worker_id}
        self._joined.setdefault(channel, set()).add(socket.id)

        def joined(err):
            if err:
                self._forget_join(channel, socket.id)
                self._abandon_join(socket, channel)
            elif not socket.channel_subscriptions.get(channel):
                self._release_if_unused(channel)  # it left while joining (its leave is sent)
            subscribed(err)
        self.engine.presence_join(channel, socket.id, info, joined)

    def _abandon_join(self, socket, channel):
        """Undo a join that failed: no events, and the channel released if nobody needs it."""
        self._unlisten_presence(socket, channel)
        self._release_if_unused(channel)

    def _leave_presence(self, socket, channel):
        self._unlisten_presence(socket, channel)
        if self._forget_join(channel, socket.id):
            self.engine.presence_leave(channel, socket.id)

    def _forget_join(self, channel, socket_id):
        """Drop a sent join from ``_joined``; True when it was there."""
        joined = self._joined.get(channel)
        if joined is None or socket_id not in joined:
            return False
        joined.discard(socket_id)
        if not joined:
            del self._joined[channel]
        return True

    def _listen_presence(self, socket, channel, callback):
        """Send ``socket`` the ``#join``/``#leave`` events of ``channel``; ``callback(err)``
        once this worker receives them."""
        name = events_channel(channel)
        self._presence_listeners.setdefault(name, {})[socket.id] = socket
        self._acquire(name, callback)

    def _unlisten_presence(self, socket, channel):
        name = events_channel(channel)
        listeners = self._presence_listeners.get(name)
        if listeners is not None and listeners.pop(socket.id, None) is not None and not listeners:
            del self._presence_listeners[name]
            self._release_if_unused(name)

    def _send_presence_event(self, name, data, listeners):
        """One ``#join``/``#leave`` event from the owner to the sockets that asked for them."""
        kind = data.get('event') if isinstance(data, dict) else None
        if kind not in ('join', 'leave'):
            return
        event = {'channel': owner_channel(name), 'socketId': data.get('socketId'),
                 'user': data.get('user')}
        frame = self._prepare({'event': '#' + kind, 'data': event})
        if frame is None:
            return
        for socket in list(listeners.values()):
            socket.send_publish_frame(frame)
