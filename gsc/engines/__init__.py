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
            history_rules=history_rules, presence_rules=presence_rules,
            **_redis_topology(engine_options))
    raise InvalidOptionsError('The brokerEngine option must be "simple" or "redis" here, not %r' % (name,))


def _redis_topology(engine_options):
    """The ``sentinels``/``masterName``/``sentinelPassword``, ``cluster`` and ``minReplicas``
    of the Redis engine, checked."""
    sentinels = engine_options.get('sentinels')
    master_name = engine_options.get('masterName')
    cluster = engine_options.get('cluster')
    if sentinels is not None:
        if (not isinstance(sentinels, list) or not sentinels or not all(
                isinstance(s, (list, tuple)) and len(s) == 2 and isinstance(s[0], str)
                and isinstance(s[1], int) and not isinstance(s[1], bool) for s in sentinels)):
            raise InvalidOptionsError('The brokerEngineOptions.sentinels option must be a list of '
                                      '[host, port] pairs, not %r' % (sentinels,))
        if not isinstance(master_name, str) or not master_name:
            raise InvalidOptionsError('The brokerEngineOptions.masterName option must name the '
                                      'primary the sentinels watch, not %r' % (master_name,))
        if cluster:
            raise InvalidOptionsError('The brokerEngineOptions sentinels and cluster options '
                                      'exclude each other')
    if cluster is not None and not isinstance(cluster, bool):
        raise InvalidOptionsError('The brokerEngineOptions.cluster option must be true, false or '
                                  'absent (detected), not %r' % (cluster,))
    prefix = engine_options.get('keyPrefix', '')
    if not isinstance(prefix, str) or '{' in prefix or '}' in prefix:
        raise InvalidOptionsError('The brokerEngineOptions.keyPrefix option must be a string '
                                  'without braces (hash tags), not %r' % (prefix,))
    min_replicas = engine_options.get('minReplicas', 0)
    if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
        raise InvalidOptionsError('The brokerEngineOptions.minReplicas option must be an integer '
                                  '>= 0, not %r' % (min_replicas,))
    return {'sentinels': sentinels, 'master_name': master_name, 'cluster': cluster,
            'sentinel_password': engine_options.get('sentinelPassword'),
            'min_replicas': min_replicas}


def _positive(engine_options, key, default):
    """``brokerEngineOptions[key]`` checked to be a positive number (``default`` when absent)."""
    value = engine_options.get(key, default)
    if not is_number(value) or value <= 0:
        raise InvalidOptionsError('The brokerEngineOptions.%s option must be a positive number, '
                                  'not %r' % (key, value))
    return value
