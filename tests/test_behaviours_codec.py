"""sc-formatter's codec cases (F-01, F-03, F-05..F-07) on gsc.core.codec; F-02/F-04 are in
tests/test_protocol.py.  Pure functions: no sockets."""

import json

import pytest

from gsc.core import codec

pytestmark = pytest.mark.timeout(10)


def test_nested_object_encodes_like_json():
    """F-01: a nested object encodes to the same JSON as JSON.stringify (compact)."""
    obj = {'foo': 123, 'bar': {'baz': [1, 'two', None, True, {'x': -1.5}]}, 'empty': {}}
    assert codec.encode(obj) == json.dumps(obj, separators=(',', ':'))
    assert codec.decode(codec.encode(obj)) == obj


def test_array_buffer_like_values_encode_like_buffers():
    """F-03: bytearray and memoryview (Python's ArrayBuffers) encode exactly as bytes (F-02)."""
    expected = ('{"foo":123,"buff":{"base64":true,"data":"aGVsbG8="},'
                '"buffArr":[{"base64":true,"data":"d29ybGQ="}]}')
    for kind in (bytearray, lambda b: memoryview(bytearray(b))):
        assert codec.encode({'foo': 123, 'buff': kind(b'hello'), 'buffArr': [kind(b'world')]}) == expected


def test_self_referencing_objects_are_refused():
    """F-05: a nested object referencing itself; F-06: a deep nested cycle -> encode raises."""
    nested = {'a': {'b': {}}}
    nested['a']['b']['self'] = nested['a']
    deep = {'l1': {'l2': {'l3': {'l4': []}}}}
    deep['l1']['l2']['l3']['l4'].append({'back': deep['l1']})
    for obj in (nested, deep):
        with pytest.raises(ValueError):
            codec.encode(obj)


def test_only_own_items_are_encoded():
    """F-07: inherited attributes are not encoded: a dict subclass with class attributes
    encodes as its own items only."""
    class WithDefaults(dict):
        inherited = 'not me'

    assert codec.encode(WithDefaults(foo=123)) == '{"foo":123}'
