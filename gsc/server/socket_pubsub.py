"""The pub/sub half of a server socket: ``#subscribe`` (with history recovery and the
subscribe middleware), ``#unsubscribe``, ``#publish``, ``#presence``, and ``kick_out``.

:class:`SocketPubSub` is a mixin of :class:`gsc.server.socket.ServerSocket`, whose state it
uses (``channel_subscriptions``, the recovery gates, the server's exchange).
"""


from ..errors import BrokerError, InvalidActionError, InvalidArgumentsError
from ..core.history import RecoveryGate, recovery_request
from ..core.middleware import MIDDLEWARE_PUBLISH_IN, MIDDLEWARE_SUBSCRIBE, Request
from ..core.protocol import CLOSED, OPEN, UNDEFINED, Responder, defined, none_if_undefined
from ..core.reserved import reserved_channel_error

MAX_RECOVERIES_IN_FLIGHT = 4
"""History reads one socket may have waiting at once: a client that subscribes and unsubscribes
in a loop with ``history``/``recover`` cannot make its broker read and send more than this many
histories (each up to ``maxBytes``) that nobody waits for."""


def js_string(value):
    """``String(value)`` in JavaScript, as SocketCluster's error messages render values."""
    if value is UNDEFINED:
        return 'undefined'
    if value is None:
        return 'null'
    if value is True or value is False:
        return 'true' if value else 'false'
    if isinstance(value, dict):
        return '[object Object]'
    if isinstance(value, list):
        return ','.join('' if v is None or v is UNDEFINED else js_string(v) for v in value)
    return str(value)



class SocketPubSub:
    """Channels of a :class:`~gsc.server.socket.ServerSocket` (a mixin)."""

    def _on_subscribe(self, packet, expired):
        respond = Responder(packet.cid, self._send_reply)
        data = packet.data
        if data is None or data is UNDEFINED:
            request = {}
        elif isinstance(data, str):
            request = {'channel': data}
        elif isinstance(data, dict):
            request = data
        else:
            request = {}
        channel = request.get('channel', UNDEFINED)
        if self._channel_too_long(channel):
            self._refuse_long_channel('Failed to subscribe socket to a channel', respond)
            return
        if self._refuse_reserved('subscribe', channel, respond):
            return
        if expired is not None and request.get('waitForAuth'):
            respond(expired)
            return
        self._run_subscribe_middleware(channel, request, expired, respond,
                                       lambda: self._subscribe(channel, request, respond))

    def _run_subscribe_middleware(self, channel, request, expired, respond, then):
        """Run the subscribe middleware as if the socket subscribed to ``channel`` with
        ``request``, then ``then()`` with ``request['data']`` as the middleware left it; a
        refusal is answered with ``respond``."""
        server = self.server
        if not server.middleware.has(MIDDLEWARE_SUBSCRIBE):
            then()
            return
        req = Request(socket=self, channel=none_if_undefined(channel), waitForAuth=request.get('waitForAuth'),
                      data=request.get('data'))
        if expired is not None:
            req.authTokenExpiredError = expired

        def done(err, _extra):
            if err:
                respond(err)
                return
            if req.data is not None or 'data' in request:
                request['data'] = req.data
            then()
        server.middleware.run(MIDDLEWARE_SUBSCRIBE, req, done)

    def _subscribe(self, channel, request, respond):
        server = self.server
        if self.state != OPEN:
            err = InvalidActionError(
                'Cannot subscribe socket to a channel before it has completed the handshake')
            server.emit_warning(err)
            respond(err)
            return
        limit = server.socket_channel_limit
        reason = recovery = None
        if limit and len(self.channel_subscriptions) >= limit:
            reason = 'Socket %s tried to exceed the channel subscription limit of %s' % (self.id, limit)
        elif not isinstance(channel, str):
            reason = 'Socket %s provided an invalid channel name' % self.id
        else:
            try:
                recovery = recovery_request(request.get('data'), server.exchange.history_policy(channel))
            except InvalidArgumentsError as exc:
                reason = 'Socket %s sent an invalid recovery request: %s' % (self.id, exc)
            if recovery is not None and self._recoveries >= MAX_RECOVERIES_IN_FLIGHT:
                reason = ('Socket %s already waits for %d history reads (try again when one is '
                          'answered)' % (self.id, self._recoveries))
        if reason is not None:
            self._fail_subscribe(channel, reason, respond)
            return
        self.channel_subscriptions[channel] = True
        if recovery is not None:
            self._open_gate(channel)

        def subscribed(err):
            if err:
                self.channel_subscriptions.pop(channel, None)
                self._forget_gate(channel)
                self._fail_subscribe(channel, getattr(err, 'message', str(err)), respond)
                return
            server.subscribes += 1
            self._emit_local('subscribe', channel, request)
            server.emit('subscription', self, channel, request)
            if request.get('batch'):
                self._queue_batched({'rid': respond.cid} if respond.cid else None)
                respond.sent = True
            else:
                respond()
            if recovery is not None:
                self._recover(channel, *recovery)
        server.exchange.subscribe_socket(self, channel, subscribed, request.get('data'))

    # -- history recovery (docs/history.md) ----------------------------------------

    def _open_gate(self, channel):
        """Hold the live publications of ``channel`` until its recovery is written."""
        if self._history_gates is None:
            self._history_gates = {}
        self._history_gates[channel] = RecoveryGate()

    def _forget_gate(self, channel):
        gates = self._history_gates
        if gates is not None and gates.pop(channel, None) is not None and not gates:
            self._history_gates = None

    def _recover(self, channel, since, epoch, limit):
        """Read the history after ``since`` (or the last ``limit``), write it, then the live
        publications held meanwhile that come after it, then ``#recovery``."""
        gate = self._history_gates[channel]
        self._recoveries += 1

        def done(err, result):
            self._recoveries -= 1
            gates = self._history_gates
            if gates is None or gates.get(channel) is not gate or self.state == CLOSED:
                return  # unsubscribed (or subscribed again) meanwhile
            if err or gate.overflowed:
                held = gate.release(None, 0)
                report = {'channel': channel, 'recovered': False, 'epoch': None, 'offset': None,
                          'missed': 0, 'error': str(err) if err else 'too many live publications '
                          'arrived during the recovery'}
                if err:
                    for frame in held:
                        self.send_publish_frame(frame)
                self.emit('#recovery', report)
                return
            publications = result['publications']
            start = publications[0]['offset'] - 1 if publications else result['offset']
            held = gate.release(result['epoch'], start)
            self.exchange.replay(self, channel, publications, result['epoch'])
            for frame in held:
                self.send_publish_frame(frame)
            self.emit('#recovery', {'channel': channel, 'recovered': result['recovered'],
                                    'epoch': result['epoch'], 'offset': result['offset'],
                                    'missed': len(publications)})
        self.exchange.history(channel, since, epoch, limit, callback=done)

    def _refuse_long_channel(self, action, respond):
        """Refuse an action on a channel whose name is too long (the name is not echoed)."""
        err = BrokerError('%s - Socket %s provided a channel name longer than %s characters'
                          % (action, self.id, self.server.options['maxChannelNameLength']))
        self._emit_error(err)
        respond(err)

    def _fail_subscribe(self, channel, reason, respond):
        err = BrokerError('Failed to subscribe socket to the %s channel - %s' % (js_string(channel), reason))
        self._emit_error(err)
        respond(err)

    def _on_unsubscribe(self, packet, _expired):
        channel = packet.data
        respond = Responder(packet.cid, self._send_reply)
        if self._channel_too_long(channel):
            self._refuse_long_channel('Failed to unsubscribe socket from a channel', respond)
            return
        if not isinstance(channel, str):
            reason = 'Socket %s tried to unsubscribe from an invalid channel name' % self.id
        elif channel not in self.channel_subscriptions:
            reason = 'Socket %s tried to unsubscribe from a channel which it is not subscribed to' % self.id
        else:
            self._unsubscribe(channel)
            respond()
            return
        err = BrokerError('Failed to unsubscribe socket from the %s channel - %s' % (js_string(channel), reason))
        self._emit_error(err)
        respond(err)

    def _unsubscribe(self, channel):
        del self.channel_subscriptions[channel]
        self._forget_gate(channel)
        self.server.exchange.unsubscribe_socket(self, channel)
        self._emit_local('unsubscribe', channel)
        self.server.emit('unsubscription', self, channel)

    def _on_publish(self, packet, expired):
        respond = Responder(packet.cid, self._send_reply)
        server = self.server
        if not server.allow_client_publish:
            err = InvalidActionError('Client publish feature is disabled')
            server.emit_warning(err)
            respond(err)
            return
        data = packet.data if isinstance(packet.data, dict) else {}
        channel = data.get('channel', UNDEFINED)
        if self._channel_too_long(channel):
            self._refuse_long_channel('Failed to publish to a channel', respond)
            return
        if self._refuse_reserved('publish', channel, respond):
            return
        message = data.get('data', UNDEFINED)
        if not server.middleware.has(MIDDLEWARE_PUBLISH_IN):
            self._publish(channel, message, UNDEFINED, respond)
            return
        req = Request(socket=self, channel=none_if_undefined(channel), data=none_if_undefined(message))
        if expired is not None:
            req.authTokenExpiredError = expired

        def done(err, _extra):
            ack_data = getattr(req, 'ackData', UNDEFINED)
            if err:
                respond(err, ack_data)
            elif message is UNDEFINED and req.data is None:
                self._publish(channel, UNDEFINED, ack_data, respond)
            else:
                self._publish(channel, req.data, ack_data, respond)
        server.middleware.run(MIDDLEWARE_PUBLISH_IN, req, done)

    def _publish(self, channel, message, ack_data, respond):
        server = self.server
        if not isinstance(channel, str):
            err = BrokerError('Socket %s tried to publish to an invalid %s channel' % (self.id, js_string(channel)))
            server.emit_warning(err)
            respond(err)
            return

        def published(err):
            if err:
                server.emit_warning(err)
                respond(err)
                return
            respond(None, ack_data)
            self._emit_local('#publish', defined(channel=channel, data=message))
        server.exchange.publish(channel, message, published)


    def _refuse_reserved(self, action, channel, respond):
        """Refuse a client's ``action`` on a reserved ``#gsc/`` channel; True when refused."""
        err = reserved_channel_error(action, channel, self)
        if err is not None:
            self._emit_error(err)
            respond(err)
        return err is not None

    def _on_presence(self, packet, expired):
        """``#presence`` ``{'channel'}``: the subscribe middleware runs as if the socket
        subscribed, then the answer is ``{'members': [{'socketId', 'user'}, ...]}``."""
        respond = Responder(packet.cid, self._send_reply)
        data = packet.data if isinstance(packet.data, dict) else {}
        channel = data.get('channel')
        if not isinstance(channel, str):
            respond(InvalidArgumentsError('Failed to get the presence of a channel - the #presence '
                                          'data needs a channel field (the channel name, a string)'))
            return
        if self._channel_too_long(channel):
            self._refuse_long_channel('Failed to get the presence of a channel', respond)
            return
        if self._refuse_reserved('presence', channel, respond):
            return
        if self.state != OPEN:
            respond(InvalidActionError('Cannot get the presence of a channel before the handshake'))
            return
        self._run_subscribe_middleware(channel, data, expired, respond,
                                       lambda: self.server.exchange.answer_presence(channel, respond))


    # -- pub/sub from server code ------------------------------------------------

    def kick_out(self, channel=None, message=UNDEFINED, callback=None):
        """Unsubscribe the socket from ``channel`` (every channel when None) with ``#kickOut``
        (without a message when none is given, as SocketCluster leaves ``undefined`` out)."""
        channels = list(self.channel_subscriptions) if channel is None else [channel]
        for name in channels:
            if name in self.channel_subscriptions:
                del self.channel_subscriptions[name]
                self._forget_gate(name)
                self.emit('#kickOut', defined(message=message, channel=name))
                self.server.exchange.unsubscribe_socket(self, name)
        if callback is not None:
            callback(None)
