"""The sans-I/O protocol core and codec, driven without any socket."""

import json

import pytest

from gsc import errors
from gsc.core import codec, protocol
from gsc.errors import (AuthTokenExpiredError, InvalidActionError, SCError, dehydrate, hydrate,
                        close_error)
from gsc.core.protocol import (UNDEFINED, CallTable, Event, Ping, Pong, Raw, Responder, Response,
                          event_packet, parse_frame, response_packet)


def test_classifies_ping_pong_events_responses_and_raw():
    """#1, #2, event packets, response packets, everything else raw (X-10)."""
    assert parse_frame('#1') == (Ping(),)
    assert parse_frame('#2') == (Pong(),)
    assert parse_frame('{"event":"e","data":{"a":1},"cid":3}') == (Event('e', {'a': 1}, 3),)
    assert parse_frame('{"rid":3,"data":5}') == (Response(3, None, 5),)
    assert parse_frame('{"event":"e"}') == (Event('e', UNDEFINED, None),)
    for raw in ('hello raw', '{"foo":1}', '"#2"', '123', '{bad json', '{"event":null}'):
        assert parse_frame(raw) == (Raw(raw),)


def test_a_batch_is_one_packet_per_element_and_raw_elements_report_the_whole_frame():
    """X-09: an array frame is processed element by element, in order."""
    frame = '[{"event":"echo","data":1,"cid":2},{"rid":9},"x"]'
    assert parse_frame(frame) == (Event('echo', 1, 2), Response(9, None, UNDEFINED), Raw(frame))


def test_builders_leave_out_undefined_data_and_keep_null():
    """Undefined omits the key, None is sent as null."""
    assert codec.encode(event_packet('e')) == '{"event":"e"}'
    assert codec.encode(event_packet('e', None, 4)) == '{"event":"e","data":null,"cid":4}'
    assert codec.encode(response_packet(7)) == '{"rid":7}'
    err = SCError('bad thing', extra=7)
    err.name = 'CustomError'
    assert json.loads(codec.encode(response_packet(7, err, {'partial': True}))) == {
        'rid': 7, 'error': {'message': 'bad thing', 'name': 'CustomError', 'extra': 7},
        'data': {'partial': True}}
    assert codec.encode(response_packet(7, 'string error')) == '{"rid":7,"error":"string error"}'


def test_plain_exceptions_dehydrate_without_a_name_and_named_ones_with_it():
    """a plain Error has no name on the wire; class names travel."""
    assert dehydrate(Exception('x')) == {'message': 'x'}

    class FailedLoginError(Exception):
        pass
    assert dehydrate(FailedLoginError('Failed to login')) == {
        'message': 'Failed to login', 'name': 'FailedLoginError'}
    assert dehydrate(AuthTokenExpiredError('jwt expired', expiry='2026')) == {
        'message': 'jwt expired', 'name': 'AuthTokenExpiredError', 'expiry': '2026'}


def test_hydration_keeps_name_and_fields():
    """On the receiving side an object becomes an error with every property."""
    err = hydrate({'message': 'm', 'name': 'ClientErr', 'code': 5})
    assert isinstance(err, Exception) and err.name == 'ClientErr' and err.code == 5 and str(err) == 'm'
    assert isinstance(hydrate({'name': 'TimeoutError', 'message': 't'}), errors.TimeoutError)
    assert hydrate(None) is None and hydrate('text') == 'text'


def test_close_errors_follow_the_sc_errors_texts():
    """Close codes map to the errors and texts of SocketCluster; 1000 and 1001 are no error."""
    assert close_error(1000) is None and close_error(1001) is None
    assert close_error(4001).message == 'Client pong timed out' and close_error(4001).code == 4001
    assert close_error(4321, 'custom reason').message == \
        'Socket connection closed with status code 4321 and reason: custom reason'
    assert close_error(4321, {'a': 1}).message.endswith('reason: {"a":1}')


def test_call_table_answers_each_cid_once():
    table = CallTable()
    cid = table.next_cid()
    assert cid == 1 and table.next_cid() == 2
    table.add(cid, 'e', 'callback')
    assert table.pop(cid)[:2] == ['e', 'callback']
    assert table.pop(cid) is None and table.pop(['unhashable']) is None


def test_responder_refuses_a_second_answer_and_ignores_calls_without_cid():
    """X-37: responding twice raises InvalidActionError 'Response <cid> has already been sent'."""
    sent = []
    respond = Responder(2, sent.append)
    respond(None, 'ok')
    with pytest.raises(InvalidActionError, match='Response 2 has already been sent'):
        respond()
    assert sent == [{'rid': 2, 'data': 'ok'}]
    Responder(None, sent.append)('ignored')
    assert len(sent) == 1


def test_codec_decodes_like_sc_formatter():
    """never raises; non-JSON stays a string; ping/pong verbatim."""
    assert codec.decode('#1') == '#1'
    assert codec.decode('  {"a":1}') == {'a': 1}
    assert codec.decode('hello') == 'hello'
    assert codec.decode('{oops') == '{oops'
    assert codec.decode(b'{"a":2}') == {'a': 2}


def test_codec_encodes_binary_as_base64_objects_and_refuses_cycles():
    """F-02, F-04..F-06 (compact, raw non-ASCII, no NaN)."""
    assert codec.encode({'foo': 123, 'buff': b'hello', 'buffArr': [b'world']}) == \
        '{"foo":123,"buff":{"base64":true,"data":"aGVsbG8="},"buffArr":[{"base64":true,"data":"d29ybGQ="}]}'
    assert codec.encode({'a': 'é/x'}) == '{"a":"é/x"}'
    assert codec.encode({'n': float('nan')}) == '{"n":null}'
    cycle = []
    cycle.append(cycle)
    with pytest.raises(ValueError):
        codec.encode(cycle)


def test_state_transitions_are_a_table():
    assert protocol.transition(protocol.CONNECTING, 'handshake') == protocol.OPEN
    assert protocol.transition(protocol.OPEN, 'close') == protocol.CLOSED
    assert protocol.transition(protocol.CLOSED, 'handshake') is None


def test_a_batch_over_max_packets_is_refused_before_classification():
    """parse_frame raises BatchTooLarge past max_packets; the limit itself is allowed."""
    frame = json.dumps([{'event': 'e', 'cid': n} for n in range(1, 4)])
    assert len(parse_frame(frame, max_packets=3)) == 3
    with pytest.raises(protocol.BatchTooLarge) as refused:
        parse_frame(frame, max_packets=2)
    assert (refused.value.count, refused.value.limit) == (3, 2)


def test_a_reply_that_cannot_be_encoded_becomes_an_error_reply():
    """the reply is marked sent only once something was sent."""
    sent = []

    def send(packet):
        codec.encode(packet)
        sent.append(packet)
    respond = Responder(3, send)
    respond(None, object())
    assert sent == [{'rid': 3, 'error': {'message': protocol.REPLY_ENCODING_FAILED, 'name': 'Error'}}]
    assert respond.sent

    def broken(packet):
        raise RuntimeError('codec down')
    respond = Responder(4, broken)
    respond(None, 1)
    assert not respond.sent


def test_a_send_that_returns_its_failure_counts_as_failed():
    """The gsc client's _send_packet returns the encoding error instead of raising it."""
    sent = []

    def send(packet):
        if 'error' not in packet:
            return ValueError('unencodable')
        sent.append(packet)
    Responder(5, send)(None, 'x')
    assert sent[0]['error']['message'] == protocol.REPLY_ENCODING_FAILED


def test_a_reply_of_none_to_a_call_without_data_has_no_data():
    """undefined in, undefined out; null in, null out."""
    sent = []
    Responder(2, sent.append, data_absent=True)(None, None)
    Responder(3, sent.append)(None, None)
    Responder(4, sent.append, data_absent=True)(None, 0)
    assert sent == [{'rid': 2}, {'rid': 3, 'data': None}, {'rid': 4, 'data': 0}]


@pytest.mark.parametrize('wire', [{'args': 5}, {'__class__': 'y'}, {'with_traceback': 1},
                                  {'name': [1], 'message': {'a': 1}}, {'_private': 1, '__dict__': 2}])
def test_hydration_never_replaces_the_attributes_of_an_exception(wire):
    """reserved, private and dunder names are not set; the message is always a str."""
    err = hydrate(wire)
    assert isinstance(err, SCError) and isinstance(str(err), str)
    assert isinstance(err.args, tuple) and callable(err.with_traceback)
    assert not hasattr(err, '_private')


def test_public_error_hides_unexpected_exceptions_only():
    """SCErrors and non-exceptions pass; other exceptions become a generic error."""
    class Leaky(Exception):
        pass
    leaky = Leaky('secret')
    leaky.path = '/srv'
    assert dehydrate(errors.public_error(leaky)) == {'message': 'Internal server error', 'name': 'Error'}
    assert dehydrate(errors.public_error(leaky, verbose=True)) == {'message': 'secret', 'name': 'Leaky'}
    kept = InvalidActionError('no', code=1)
    assert errors.public_error(kept) is kept and errors.public_error('text') == 'text'


def test_close_error_reasons_are_cut_short():
    """a client's huge close reason does not become a huge warning."""
    message = close_error(4321, 'x' * 100000).message
    assert len(message) < 400 and message.endswith('...')


def test_star_imports_never_shadow_python_s_timeout_error():
    """SocketCluster's TimeoutError is gsc.TimeoutError, a real class with its name, and
    ``from gsc import *`` leaves Python's own TimeoutError alone."""
    import builtins
    import gsc
    namespace = {}
    exec('from gsc import *', namespace)
    exec('from gsc.errors import *', namespace)
    assert 'TimeoutError' not in namespace
    assert gsc.TimeoutError is errors.TimeoutError and gsc.TimeoutError is not builtins.TimeoutError
    assert gsc.TimeoutError.__name__ == 'TimeoutError' and gsc.TimeoutError.__module__ == 'gsc.errors'
    assert 'BrokerError' in namespace
