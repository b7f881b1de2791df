"""server.tls: the self-signed development certificate, and that a real TLS client accepts it."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from server.tls import ensure_dev_certificate, server_ssl_context


def paths(tmp_path: Path) -> tuple[Path, Path]:
    # Separate, not yet existing directories: both must be created.
    return tmp_path / "certs" / "dev-cert.pem", tmp_path / "keys" / "dev-key.pem"


def test_creates_a_certificate_for_localhost_and_loopback(tmp_path: Path) -> None:
    cert_path, key_path = paths(tmp_path)
    assert ensure_dev_certificate(cert_path, key_path) is True
    assert cert_path.is_file() and key_path.is_file()

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    addresses = san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in addresses
    assert ipaddress.ip_address("::1") in addresses

    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.issuer == cert.subject  # self-signed
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is False


def test_key_belongs_to_the_certificate_and_is_owner_only(tmp_path: Path) -> None:
    cert_path, key_path = paths(tmp_path)
    ensure_dev_certificate(cert_path, key_path)

    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.PEM, public) == (
        cert.public_key().public_bytes(serialization.Encoding.PEM, public)
    )


def test_key_is_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    cert_path, key_path = paths(tmp_path)
    old = os.umask(0)
    try:
        ensure_dev_certificate(cert_path, key_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600


def test_existing_files_are_reused_unchanged(tmp_path: Path) -> None:
    cert_path, key_path = paths(tmp_path)
    assert ensure_dev_certificate(cert_path, key_path) is True
    cert_before, key_before = cert_path.read_bytes(), key_path.read_bytes()
    stamps_before = (cert_path.stat().st_mtime_ns, key_path.stat().st_mtime_ns)

    assert ensure_dev_certificate(cert_path, key_path) is False
    assert (cert_path.read_bytes(), key_path.read_bytes()) == (cert_before, key_before)
    assert (cert_path.stat().st_mtime_ns, key_path.stat().st_mtime_ns) == stamps_before


def test_a_missing_key_makes_a_fresh_pair(tmp_path: Path) -> None:
    cert_path, key_path = paths(tmp_path)
    ensure_dev_certificate(cert_path, key_path)
    old_cert = cert_path.read_bytes()
    key_path.unlink()

    assert ensure_dev_certificate(cert_path, key_path) is True
    assert cert_path.read_bytes() != old_cert
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert key.public_key() == cert.public_key()


async def handshake(cert_path: Path, key_path: Path, server_hostname: str) -> str:
    """Serve TLS on 127.0.0.1 with the dev certificate; a verifying client says what it got."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(
        answer, "127.0.0.1", 0, ssl=server_ssl_context(cert_path, key_path)
    )
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(cert_path))
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client,
                                    server_hostname=server_hostname),
            timeout=5,
        )
        line = await asyncio.wait_for(reader.readline(), timeout=5)
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        return f"{line.decode().strip()} {version}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_verifying_client_accepts_it_by_name_and_by_address(tmp_path: Path) -> None:
    cert_path, key_path = paths(tmp_path)
    ensure_dev_certificate(cert_path, key_path)
    for name in ("localhost", "127.0.0.1"):
        answer, version = (await handshake(cert_path, key_path, name)).split()
        assert answer == "ok"
        assert version in {"TLSv1.2", "TLSv1.3"}


async def test_a_verifying_client_refuses_another_name(tmp_path: Path) -> None:
    cert_path, key_path = paths(tmp_path)
    ensure_dev_certificate(cert_path, key_path)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"erv\.example\.org"):
        await handshake(cert_path, key_path, "erv.example.org")


def test_server_context_refuses_old_tls(tmp_path: Path) -> None:
    cert_path, key_path = paths(tmp_path)
    ensure_dev_certificate(cert_path, key_path)
    context = server_ssl_context(cert_path, key_path)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
