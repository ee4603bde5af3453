"""The HTTP side of a WebSocket upgrade without I/O: bytes of a request head in, a WSGI
environ (or a refusal) out, and the 101 answer.

:func:`parse_upgrade_head` is the lean upgrade reader's parser: a complete, well-formed
upgrade at the realtime path becomes the items of a WSGI environ, anything else None (pywsgi
then serves it as it would have).  :func:`check_framing` and :func:`read_header_lines` are the
refusals gsc adds to pywsgi's own reading (:class:`RequestRefused` carries the answer).
"""

import base64
import binascii
import hashlib
import re

BAD_REQUEST = ('400 Bad Request', 'Bad Request')
UPGRADE_REQUIRED = ('426 Upgrade Required', 'Upgrade Required')
NOT_IMPLEMENTED = ('501 Not Implemented', 'Not Implemented')
URI_TOO_LONG = '414 Request-URI Too Long'
HEADERS_TOO_LARGE = '431 Request Header Fields Too Large'


def close_response(status, body=b''):
    """A complete plain-text HTTP answer with ``status`` after which the connection closes."""
    return ('HTTP/1.1 %s\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n'
            'Content-Length: %d\r\n\r\n' % (status, len(body))).encode('latin-1') + body


REQUEST_TIMEOUT_RESPONSE = close_response('408 Request Timeout')
SERVICE_UNAVAILABLE_RESPONSE = close_response('503 Service Unavailable', b'Service Unavailable')

HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:")
"""A header line starts with a token and a colon (no obs-fold, no space before the colon)."""
HEADER_NAME = re.compile(HEADER_LINE.pattern.decode('ascii'))
"""HEADER_LINE for a decoded line (the lean upgrade reader's)."""
DIGITS = re.compile(r'[0-9]+')

HEAD_END = b'\r\n\r\n'
# the versions gevent-websocket accepts, and RFC 6455's GUID of Sec-WebSocket-Accept
SUPPORTED_VERSIONS = ('13', '8', '7')
WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'


class RequestRefused(ValueError):
    """A request gsc will not pass on; ``response`` is the complete answer (the connection closes)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.code = status[:3]
        self.response = close_response(status)


def is_upgrade(environ):
    """True for a request that asks for a WebSocket."""
    return environ.get('HTTP_UPGRADE', '').lower() == 'websocket'


def check_framing(headers, version):
    """Raise RequestRefused (400) unless the body's length is unambiguous: a single
    ``Transfer-Encoding: chunked`` (HTTP/1.1 only) or one decimal Content-Length, never both."""
    codings = headers.get_all('transfer-encoding')
    lengths = headers.get_all('content-length')
    if codings is not None:
        if lengths is not None:
            raise RequestRefused(BAD_REQUEST[0], 'Content-Length with Transfer-Encoding')
        if version != 'HTTP/1.1':
            raise RequestRefused(BAD_REQUEST[0], 'Transfer-Encoding in an %s request' % version)
        if len(codings) != 1 or codings[0].strip().lower() != 'chunked':
            raise RequestRefused(BAD_REQUEST[0], 'Transfer-Encoding other than chunked: %r'
                                 % ', '.join(codings))
    elif lengths is not None and (len(lengths) != 1 or not DIGITS.fullmatch(lengths[0].strip())):
        raise RequestRefused(BAD_REQUEST[0], 'Invalid Content-Length: %r' % ', '.join(lengths))


def read_header_lines(rfile, budget):
    """The header lines up to the blank line, within ``budget`` bytes in total."""
    lines = []
    while True:
        line = rfile.readline(budget + 1)
        if len(line) > budget:
            raise RequestRefused(HEADERS_TOO_LARGE, 'Request headers larger than maxHeaderSize')
        budget -= len(line)
        if line in (b'\r\n', b'\n'):
            return lines
        if not line.endswith(b'\n'):
            raise RequestRefused(BAD_REQUEST[0], 'Request headers ended early')
        if not HEADER_LINE.match(line):
            raise RequestRefused(BAD_REQUEST[0], 'Malformed header line %r' % line[:80])
        lines.append(line)


def valid_websocket_key(key):
    """True for a Sec-WebSocket-Key that is 16 bytes in base64."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def switching_protocols(key, extensions=None):
    """The complete 101 answer to an upgrade with ``key`` (``extensions``: the
    Sec-WebSocket-Extensions answer, or None)."""
    accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode('latin-1')).digest())
    return (b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
            b'Sec-WebSocket-Accept: ' + accept + b'\r\n'
            + (b'' if extensions is None else b'Sec-WebSocket-Extensions: ' + extensions.encode() + b'\r\n')
            + b'\r\n')


def parse_upgrade_head(data, path, max_header_size):
    """The request items of a WSGI environ (``REQUEST_METHOD``, ``PATH_INFO``, ``HTTP_*``, ...)
    when ``data`` starts with a complete head that gsc upgrades without pywsgi: ``GET`` of
    ``path`` (no escapes) in HTTP/1.1, within ``max_header_size``, well-formed header
    lines, ``Upgrade: websocket``, ``Connection: upgrade``, a supported Sec-WebSocket-Version
    and a valid key, no body.  None for anything else, which pywsgi then serves (or refuses)
    exactly as it would have: this function never decides a refusal.

    Headers are merged as pywsgi does (:func:`merge_header_lines`).  The decoded head is kept
    as ``gsc.head``, from which :class:`~gsc.server.scserver.UpgradeRequest` reads its headers
    when someone asks for them.
    """
    end = data.find(HEAD_END)
    if end < 0 or end + len(HEAD_END) > max_header_size:
        return None
    text = data[:end].decode('latin-1')
    lines = text.split('\r\n')
    breaks = len(lines) - 1
    if text.count('\n') != breaks or text.count('\r') != breaks or not lines[0].isprintable():
        return None  # a bare CR or LF, a control character: pywsgi's reader decides
    request_line = lines[0].split(' ')
    if len(request_line) != 3 or request_line[0] != 'GET' or request_line[2] != 'HTTP/1.1':
        return None
    target, _, query = request_line[1].partition('?')
    if target != path:
        return None
    header_lines = lines[1:]
    for line in header_lines:
        if not HEADER_NAME.match(line):
            return None
    environ = {'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '', 'PATH_INFO': target,
               'QUERY_STRING': query, 'SERVER_PROTOCOL': 'HTTP/1.1', 'gsc.head': text}
    merge_header_lines(header_lines, environ_key, environ)
    return environ if _plain_upgrade(environ) else None


def environ_key(name):
    """The WSGI environ key of a header name (``Sec-WebSocket-Key`` -> ``HTTP_SEC_WEBSOCKET_KEY``)."""
    return 'HTTP_' + name.upper().replace('-', '_')


def merge_header_lines(lines, key, into):
    """Add the ``name: value`` ``lines`` to the dict ``into`` as pywsgi merges them, under
    ``key(name)``: names holding ``_`` dropped, values stripped, a repeated name's values
    joined with ``,`` (cookies with ``; ``); return ``into``."""
    cookie = key('Cookie')
    for line in lines:
        name, _, value = line.partition(':')
        if '_' in name:
            continue
        name = key(name)
        value = value.strip()
        if name in into:
            into[name] += ('; ' if name == cookie else ',') + value
        else:
            into[name] = value
    return into


def _plain_upgrade(environ):
    """The checks gevent-websocket and gsc make before a 101, all passed, and no body."""
    get = environ.get
    return (get('HTTP_UPGRADE', '').lower() == 'websocket'
            and 'upgrade' in get('HTTP_CONNECTION', '').lower()
            and get('HTTP_SEC_WEBSOCKET_VERSION') in SUPPORTED_VERSIONS
            and valid_websocket_key(get('HTTP_SEC_WEBSOCKET_KEY', '').strip())
            and 'HTTP_CONTENT_LENGTH' not in environ and 'HTTP_TRANSFER_ENCODING' not in environ
            and 'HTTP_CONTENT_TYPE' not in environ and 'HTTP_EXPECT' not in environ)
