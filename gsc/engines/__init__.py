"""Pub/sub engines under the exchange: how a publish reaches the other workers.

``simple`` (in-process, a standalone server), ``redis`` (many machines).  The broker
processes of a cluster plug in the same way.  The interface is in docs/CONTRACTS.md.
"""

from ..errors import InvalidOptionsError


def create_engine(name, engine_options=None, on_warning=None):
    """The engine named ``name`` with its ``brokerEngineOptions``."""
    engine_options = dict(engine_options or {})
    if name in (None, 'simple', 'sc-simple-broker'):
        from .simple import SimpleEngine
        return SimpleEngine()
    if name == 'redis':
        from .redis import RedisEngine
        return RedisEngine(url=engine_options.get('url', 'redis://127.0.0.1:6379/0'),
                           key_prefix=engine_options.get('keyPrefix', 'gsc:'), on_warning=on_warning)
    raise InvalidOptionsError('The brokerEngine option must be "simple" or "redis" here, not %r' % (name,))
