"""https against a server whose certificate civflow must verify, over real TLS on 127.0.0.1.

The client loads its CA bundle (SSL_CERT_FILE, SSL_CERT_DIR, else certifi's, as httpx
does) on a thread: while it starts when its API speaks TLS, else when an https exchange
first needs it. These tests hold it to verifying exactly as before:
a certificate from the named CA passes, any other is refused, a bundle that cannot be
read is a located error, and an http server is reached whatever the bundle.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from civflow.client.civitai import CivitaiClient
from civflow.errors import ServiceUnavailable
from civflow.origin import Origin
from tests.client.hostile_server import HostileServer, Reply, serve_hostile

KEY = "sk-civflow-TLS-SECRET-42"
WF = "/v2/consumer/workflows"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 (with its key)."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("civflow test CA"))
          .issuer_name(_name("civflow test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return {"ca": _pem(folder / "ca.pem", ca), "cert": _pem(folder / "server.pem", leaf),
            "key": folder / "server.key"}


@pytest.fixture
def https_api(pki: dict[str, Path]) -> Iterator[HostileServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["cert"], pki["key"])
    with serve_hostile(tls=context) as server:
        server.script(f"GET {WF}", Reply(200, {"items": [], "next": None}))
        yield server


def _identify(url: str) -> Origin:
    async def main() -> Origin:
        async with CivitaiClient(url, KEY, max_attempts=1) as client:
            return await client.identify()
    return asyncio.run(main())


def _bundle(monkeypatch: pytest.MonkeyPatch, cafile: Path | None) -> None:
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                  "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    if cafile is None:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv("SSL_CERT_FILE", str(cafile))


def test_a_certificate_from_the_named_ca_is_trusted(https_api: HostileServer,
                                                    pki: dict[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _bundle(monkeypatch, pki["ca"])
    assert https_api.url.startswith("https://")
    assert _identify(https_api.url) is Origin.CIVITAI
    assert https_api.hits(f"GET {WF}") == 1


def test_a_certificate_from_any_other_ca_is_refused(https_api: HostileServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading on a thread never means an https exchange goes out unverified: with
    certifi's bundle, the test CA's certificate fails the handshake."""
    _bundle(monkeypatch, None)
    with pytest.raises(ServiceUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        _identify(https_api.url)
    assert https_api.hits(f"GET {WF}") == 0


def test_an_unreadable_bundle_is_a_located_error_for_https_only(
        https_api: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-bundle.pem"
    _bundle(monkeypatch, missing)
    with pytest.raises(ServiceUnavailable) as info:
        _identify(https_api.url)
    assert f"SSL_CERT_FILE={missing} could not be loaded" in info.value.message
    assert "SSL_CERT_FILE" in (info.value.hint or "")
    assert KEY not in info.value.message
    with serve_hostile() as plain:  # an http server needs no CA at all
        plain.script(f"GET {WF}", Reply(200, {"items": [], "next": None}))
        assert _identify(plain.url) is Origin.CIVITAI


def test_a_client_of_an_http_server_loads_the_bundle_only_for_https(
        https_api: HostileServer, pki: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: a client of an http server (the emulator) spends nothing on CAs while it
    talks http; when it does fetch from https (a blob URL), it verifies as any other."""
    _bundle(monkeypatch, pki["ca"])
    https_api.script("GET /blob.png", Reply(200, b"\x89PNG picture"))

    async def main() -> None:
        with serve_hostile() as plain:
            plain.script(f"GET {WF}", Reply(200, {"items": [], "next": None}))
            async with CivitaiClient(plain.url, KEY, max_attempts=1) as client:
                assert await client.identify() is Origin.CIVITAI
                trust = client._wire.trust
                assert trust is not None and not trust._loading  # no CA read for http
                done = await client.download(f"{https_api.url}/blob.png", tmp_path / "b.png")
                assert trust._loading and done.size == len(b"\x89PNG picture")
    asyncio.run(main())
    assert https_api.hits("GET /blob.png") == 1


@pytest.mark.parametrize("named", ["file", "dir", "certifi"])
def test_the_context_verifies_as_httpx_would(named: str, pki: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Same CAs, same checks as the context httpx builds by default, whichever names
    the bundle."""
    from civflow.client._wire import Trust

    _bundle(monkeypatch, pki["ca"] if named == "file" else None)
    if named == "dir":
        folder = pki["ca"].parent / "capath"
        folder.mkdir(exist_ok=True)
        monkeypatch.setenv("SSL_CERT_DIR", str(folder))
    trust = Trust()
    asyncio.run(trust.ready())
    ours, theirs = trust.context, httpx.create_ssl_context()
    assert ours.verify_mode == theirs.verify_mode == ssl.CERT_REQUIRED
    assert ours.check_hostname and theirs.check_hostname
    assert ours.verify_flags == theirs.verify_flags
    assert ours.options == theirs.options
    assert ours.minimum_version == theirs.minimum_version
    assert ours.cert_store_stats() == theirs.cert_store_stats()
