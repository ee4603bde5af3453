"""Pub/sub engines under the exchange: how a publish reaches the other workers.

``simple`` (in-process, a standalone server), ``redis`` (many machines).  The broker
processes of a cluster plug in the same way.  The interface is in docs/CONTRACTS.md.
"""

from ..errors import InvalidOptionsError
from ..core.checks import is_number


def create_engine(name, engine_options=None, on_warning=None, start_timeout=None,
                  history_rules=None, presence_rules=None):
    """The engine named ``name`` with its ``brokerEngineOptions``; ``start_timeout`` (ms, the
    worker's ``startTimeout``) bounds how long a worker waits for the engine at start;
    ``history_rules`` (:class:`gsc.core.history.HistoryRules`) and ``presence_rules`` say which
    channels keep a history and track presence."""
    engine_options = dict(engine_options or {})
    if name in (None, 'simple', 'sc-simple-broker'):
        from .simple import SimpleEngine
        return SimpleEngine(history_rules=history_rules, presence_rules=presence_rules)
    if name == 'redis':
        from . import redis as redis_engine
        connect_timeout = _positive(engine_options, 'connectTimeout',
                                    redis_engine.DEFAULT_CONNECT_TIMEOUT)
        max_connections = _positive(engine_options, 'poolSize',
                                    redis_engine.DEFAULT_MAX_CONNECTIONS)
        return redis_engine.RedisEngine(
            url=engine_options.get('url', redis_engine.DEFAULT_URL),
            key_prefix=engine_options.get('keyPrefix', redis_engine.DEFAULT_PREFIX),
            on_warning=on_warning, connect_timeout=connect_timeout,
            max_connections=int(max_connections), start_timeout=start_timeout,
            history_rules=history_rules, presence_rules=presence_rules)
    raise InvalidOptionsError('The brokerEngine option must be "simple" or "redis" here, not %r' % (name,))


def _positive(engine_options, key, default):
    """``brokerEngineOptions[key]`` checked to be a positive number (``default`` when absent)."""
    value = engine_options.get(key, default)
    if not is_number(value) or value <= 0:
        raise InvalidOptionsError('The brokerEngineOptions.%s option must be a positive number, '
                                  'not %r' % (key, value))
    return value
