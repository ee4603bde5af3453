"""The sans-I/O core: SocketCluster's protocol and the logic under it, with no sockets and no gevent I/O.

- :mod:`~gsc.core.protocol`: protocol v1 packets (frames in, packets out) and the call table of cid/rid.
- :mod:`~gsc.core.codec`: the default codec (sc-formatter): JSON text frames, binary as base64.
- :mod:`~gsc.core.emitter`: the event emitter (on/once/off/emit).
- :mod:`~gsc.core.middleware`: middleware chains and the request objects they see.
- :mod:`~gsc.core.reserved`: the channel names reserved for gsc itself (``#gsc/...``).
- :mod:`~gsc.core.hasher`: sc-hasher, which broker owns a channel or a key.
- :mod:`~gsc.core.datamap`: the key/value store a broker holds (FlexiMap + ExpiryManager).
- :mod:`~gsc.core.kv`: the key/value commands of the brokers on a data map.
- :mod:`~gsc.core.patterns`: options that apply per channel pattern (the first match wins).
- :mod:`~gsc.core.history`: channel history rules, the bounded history store and recovery.
- :mod:`~gsc.core.presence`: channel presence rules and the bounded table of members.
- :mod:`~gsc.core.checks`: checks of values from outside (a number that is not a bool, in range).
- :mod:`~gsc.core.options`: the option registry: every option's default, check, flag, variable,
  scope and doc.
- :mod:`~gsc.core.client_state`: what both Python clients decide (reconnect back-off, handshake
  and auth answers, history channel positions), shared by :mod:`gsc.client` and :mod:`gsc.aio`.
"""
