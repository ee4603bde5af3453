"""TLS: a worker server with a certificate and the Python client with ``secure=True``."""

import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import wait_until
from gsc.client import create


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1: (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, '127.0.0.1')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = tmp_path / 'cert.pem', tmp_path / 'key.pem'
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(certfile), str(keyfile)


def test_emit_and_publish_over_tls(make_server, certificate):
    certfile, keyfile = certificate
    server = make_server(certfile=certfile, keyfile=keyfile)
    server.on('connection', lambda socket, status: socket.on('echo', lambda d, respond: respond(None, d)))
    context = ssl.create_default_context(cafile=certfile)
    client = create(hostname='127.0.0.1', port=server.port, secure=True, ssl_context=context,
                    auto_reconnect=False)
    try:
        client.wait_for('connect', timeout=5)
        assert client.invoke('echo', {'big': 'x' * 200000}, timeout=5) == {'big': 'x' * 200000}
        received = []
        client.subscribe('tls').watch(received.append)
        client.wait_for('subscribe', timeout=5)
        server.exchange.publish('tls', 'secret')
        wait_until(lambda: received == ['secret'])
    finally:
        client.destroy()
