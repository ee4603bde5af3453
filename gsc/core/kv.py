"""The key/value commands of the brokers (sc-broker's), on a :class:`DataMap`.

:func:`execute` is the one place where a command (an action name and its fields, as
they travel between a worker and a broker) becomes a DataMap call, so the broker
process and the in-process engine of a standalone server answer alike.  ``getValue``
asks for the value in the answer; ``noAck`` asks for no answer at all.
"""

from ..errors import InvalidArgumentsError
from .protocol import UNDEFINED

ROUTED_BY_KEY = ('set', 'get', 'getRange', 'count', 'add', 'concat', 'remove', 'removeRange',
                 'splice', 'pop', 'hasKey', 'getExpiry', 'extractKeys', 'extractValues')
"""Actions sent to the broker that owns their key; ``getAll``, ``removeAll``,
``expire`` and ``unexpire`` go to every broker."""


def _value(result, fields):
    return result if fields.get('getValue') else UNDEFINED


def _set(data_map, f):
    return _value(data_map.set(f['key'], f.get('value')), f)


def _concat(data_map, f):
    return _value(data_map.concat(f['key'], f.get('value')), f)


def _remove(data_map, f):
    return _value(data_map.remove(f['key']), f)


def _remove_range(data_map, f):
    return _value(data_map.remove_range(f['key'], f.get('fromIndex'), f.get('toIndex')), f)


def _splice(data_map, f):
    return _value(data_map.splice(f['key'], f.get('index'), f.get('count'), f.get('items')), f)


def _pop(data_map, f):
    return _value(data_map.pop(f['key']), f)


def _remove_all(data_map, f):
    data_map.remove_all()
    return UNDEFINED


def _expire(data_map, f):
    data_map.expire(f['keys'], f['value'])
    return UNDEFINED


def _unexpire(data_map, f):
    data_map.unexpire(f['keys'])
    return UNDEFINED


COMMANDS = {
    'set': _set,
    'get': lambda m, f: m.get(f['key']),
    'getRange': lambda m, f: m.get_range(f['key'], f.get('fromIndex'), f.get('toIndex')),
    'getAll': lambda m, f: m.get_all(),
    'count': lambda m, f: m.count(f['key']),
    'add': lambda m, f: m.add(f['key'], f.get('value')),
    'concat': _concat,
    'remove': _remove,
    'removeRange': _remove_range,
    'removeAll': _remove_all,
    'splice': _splice,
    'pop': _pop,
    'hasKey': lambda m, f: m.has_key(f['key']),
    'expire': _expire,
    'unexpire': _unexpire,
    'getExpiry': lambda m, f: m.get_expiry(f['key']),
    'extractKeys': lambda m, f: m.extract_keys(f['key']),
    'extractValues': lambda m, f: m.extract_values(f['key']),
}


def execute(data_map, action, fields):
    """The answer of ``action`` on ``data_map`` (UNDEFINED for none); InvalidArgumentsError
    for an unknown action or a missing field."""
    command = COMMANDS.get(action)
    if command is None:
        raise InvalidArgumentsError('Unknown key/value action %r' % (action,))
    try:
        return command(data_map, fields)
    except KeyError as exc:
        raise InvalidArgumentsError('The %s action needs a %s field' % (action, exc.args[0])) from None
