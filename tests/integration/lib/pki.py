"""Test certificates, made at test time with `cryptography` and never committed.

Owns: a test CA and a server certificate for 127.0.0.1, ::1 and localhost signed
by it; a second, unrelated CA with its own server certificate (the "bad
certificate" case); an expired and a wrong-host certificate from the good CA.
Must never: write keys anywhere but the directory it is given.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    dir: str
    ca_file: str          # trust anchor for the daemon ([http] ca_file)
    cert_file: str        # server cert for 127.0.0.1/::1/localhost, signed by ca_file
    key_file: str
    other_ca_file: str    # an unrelated CA
    other_cert_file: str  # a server cert for the same names, signed by other_ca_file
    other_key_file: str
    expired_cert_file: str   # signed by ca_file, expired yesterday
    expired_key_file: str
    wronghost_cert_file: str  # signed by ca_file, only for wrong.invalid
    wronghost_key_file: str


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "oauth-refreshd tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _ca(cn, now):
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key, ca_cert, names, not_before, not_after):
    key = _key()
    sans = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _write_key(path, key):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def make_pki(directory):
    """Creates every certificate in directory (which must exist); returns a Pki."""
    now = datetime.datetime.now(datetime.timezone.utc)
    names = ["localhost", "127.0.0.1", "::1"]
    p = lambda n: os.path.join(directory, n)  # noqa: E731

    ca_key, ca = _ca("oauth-refreshd test CA", now)
    _write_cert(p("ca.pem"), ca)
    key, cert = _leaf(ca_key, ca, names, now - datetime.timedelta(hours=1),
                      now + datetime.timedelta(days=1))
    _write_cert(p("server.pem"), cert)
    _write_key(p("server.key"), key)

    other_key, other_ca = _ca("unrelated test CA", now)
    _write_cert(p("other-ca.pem"), other_ca)
    key, cert = _leaf(other_key, other_ca, names, now - datetime.timedelta(hours=1),
                      now + datetime.timedelta(days=1))
    _write_cert(p("other-server.pem"), cert)
    _write_key(p("other-server.key"), key)

    key, cert = _leaf(ca_key, ca, names, now - datetime.timedelta(days=3),
                      now - datetime.timedelta(days=1))
    _write_cert(p("expired-server.pem"), cert)
    _write_key(p("expired-server.key"), key)

    key, cert = _leaf(ca_key, ca, ["wrong.invalid"], now - datetime.timedelta(hours=1),
                      now + datetime.timedelta(days=1))
    _write_cert(p("wronghost-server.pem"), cert)
    _write_key(p("wronghost-server.key"), key)

    return Pki(dir=directory, ca_file=p("ca.pem"), cert_file=p("server.pem"),
               key_file=p("server.key"), other_ca_file=p("other-ca.pem"),
               other_cert_file=p("other-server.pem"), other_key_file=p("other-server.key"),
               expired_cert_file=p("expired-server.pem"), expired_key_file=p("expired-server.key"),
               wronghost_cert_file=p("wronghost-server.pem"),
               wronghost_key_file=p("wronghost-server.key"))
