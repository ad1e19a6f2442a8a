"""DICOM TLS (BCP 195) against DCMTK's +tls clients, with a CA the tests make.

Good certificates associate; a certificate from another CA, an expired one, no certificate,
plain TCP on the TLS port, a ClientHello on the plain port, a stalled handshake and garbage
after the handshake are refused, and the server keeps serving both ports.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from conftest import listed_test_aes
from dicomgen import make_dataset, write
from ports import free_port
from tlsca import CertificateAuthority, Pair
from vesalius.config import ConfigError, RemoteAE
from vesalius.container import build

DCMTK = Path("/usr/bin")
pytestmark = pytest.mark.skipif(
    not (DCMTK / "echoscu").exists(), reason="DCMTK is not installed (apt-get install dcmtk)"
)


@dataclass
class Pki:
    ca: CertificateAuthority
    server: Pair
    client: Pair
    expired: Pair
    foreign: Pair
    foreign_ca: CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(folder)
    other = CertificateAuthority(folder / "other", "Someone Else CA")
    return Pki(
        ca=ca,
        server=ca.issue("server", "vesalius.test"),
        client=ca.issue("client", "modality.test"),
        expired=ca.issue("expired", "old-modality.test", expired=True),
        foreign=other.issue("foreign", "intruder.test"),
        foreign_ca=other,
    )


@dataclass
class TlsServer:
    host: str
    port: int
    tls_port: int
    container: Any


@pytest.fixture
def tls_server(make_settings: Any, pki: Pki) -> Iterator[TlsServer]:
    from vesalius.dimse.server import DicomServer

    settings = make_settings(
        dicom_tls_port=0,
        dicom_tls_certificate=pki.server.certificate,
        dicom_tls_private_key=pki.server.key,
        dicom_tls_ca_certificates=pki.ca.certificate,
        remote_ae=listed_test_aes(),
    )
    container = build(settings, migrate=True)
    server = DicomServer(settings, container.archive, container.audit, container.auth)
    host, port = server.start()
    assert server.tls_address is not None
    try:
        yield TlsServer(host, port, server.tls_address[1], container)
    finally:
        server.stop()
        container.close()


def dcmtk(tool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DCMTK / tool), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def tls(pair: Pair, ca: Path) -> list[str | Path]:
    return ["+tls", pair.key, pair.certificate, "+cf", ca]


def echo(server: TlsServer, *options: str | Path, tls_port: bool = True) -> bool:
    port = server.tls_port if tls_port else server.port
    result = dcmtk("echoscu", *options, "-aec", "VESALIUS", server.host, str(port))
    return result.returncode == 0


def test_echo_store_find_over_tls(tls_server: TlsServer, pki: Pki, tmp_path: Path) -> None:
    assert echo(tls_server, *tls(pki.client, pki.ca.certificate))
    ds = make_dataset(PatientID="TLS1", PatientName="SECURE^PATIENT")
    path = write(tmp_path / "in", ds)
    result = dcmtk(
        "storescu", *tls(pki.client, pki.ca.certificate), "-aec", "VESALIUS",
        tls_server.host, str(tls_server.tls_port), path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "found"
    out.mkdir()
    result = dcmtk(
        "findscu", "-S", "-X", "-od", out, *tls(pki.client, pki.ca.certificate),
        "-aec", "VESALIUS", tls_server.host, str(tls_server.tls_port),
        "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=TLS1", "-k", "StudyInstanceUID",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [answer] = [dcmread(p) for p in out.iterdir()]
    assert answer.StudyInstanceUID == ds.StudyInstanceUID


def test_bad_certificates_and_plain_tcp_are_refused(tls_server: TlsServer, pki: Pki) -> None:
    # Signed by another CA, expired, or none at all (anonymous TLS).
    assert not echo(tls_server, *tls(pki.foreign, pki.ca.certificate))
    assert not echo(tls_server, *tls(pki.expired, pki.ca.certificate))
    assert not echo(tls_server, "+tla", "-ic")
    # The client does not trust the server's CA.
    assert not echo(tls_server, *tls(pki.client, pki.foreign_ca.certificate))
    # Plain TCP on the TLS port, and TLS on the plain port.
    assert not echo(tls_server)
    assert not echo(tls_server, *tls(pki.client, pki.ca.certificate), tls_port=False)
    # Both ports still serve.
    assert echo(tls_server, tls_port=False)
    assert echo(tls_server, *tls(pki.client, pki.ca.certificate))


def _client_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.certificate))
    context.check_hostname = False
    context.load_cert_chain(str(pki.client.certificate), str(pki.client.key))
    return context


def test_stalled_handshakes_and_garbage_do_not_stop_the_server(
    tls_server: TlsServer, pki: Pki
) -> None:
    stalled = [socket.create_connection((tls_server.host, tls_server.tls_port)) for _ in range(5)]
    try:
        # Others are served while those peers say nothing.
        started = time.monotonic()
        assert echo(tls_server, *tls(pki.client, pki.ca.certificate))
        assert time.monotonic() - started < 10
        # A good handshake followed by garbage: the association is dropped, nothing else.
        raw = socket.create_connection((tls_server.host, tls_server.tls_port))
        with _client_context(pki).wrap_socket(raw) as wrapped:
            wrapped.settimeout(10)
            wrapped.sendall(b"\x07\x00" + b"\xff" * 4000)
            try:
                while wrapped.recv(4096):
                    pass
            except (OSError, ssl.SSLError):
                pass
        # A ClientHello on the plain port.
        raw = socket.create_connection((tls_server.host, tls_server.port))
        with raw, pytest.raises((ssl.SSLError, OSError)):
            _client_context(pki).wrap_socket(raw).do_handshake()
    finally:
        for sock in stalled:
            sock.close()
    assert echo(tls_server, tls_port=False)
    assert echo(tls_server, *tls(pki.client, pki.ca.certificate))


def test_tls_settings_say_what_is_missing(make_settings: Any, pki: Pki, tmp_path: Path) -> None:
    from vesalius.tls import server_context

    with pytest.raises(ValueError, match="dicom_tls_certificate and dicom_tls_private_key"):
        make_settings(dicom_tls_port=2762)
    settings = make_settings(
        dicom_tls_port=0,
        dicom_tls_certificate=tmp_path / "missing.crt",
        dicom_tls_private_key=pki.server.key,
    )
    with pytest.raises(ConfigError, match=r"missing\.crt"):
        server_context(settings)
    mismatched = make_settings(
        dicom_tls_port=0,
        dicom_tls_certificate=pki.server.certificate,
        dicom_tls_private_key=pki.client.key,
    )
    with pytest.raises(ConfigError, match="belong together"):
        server_context(mismatched)


def test_c_move_to_a_tls_peer(tls_server: TlsServer, pki: Pki, tmp_path: Path) -> None:
    ds = make_dataset(PatientID="TLSMOVE")
    tls_server.container.archive.store(write(tmp_path / "in", ds).read_bytes(), origin="test")
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    storescp = subprocess.Popen(
        [
            str(DCMTK / "storescp"), "-aet", "TLSDEST", "-od", str(received),
            *map(str, tls(pki.client, pki.ca.certificate)), str(port),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        settings = tls_server.container.settings
        settings.remote_ae = [
            *settings.remote_ae,
            RemoteAE(name="tlsdest", ae_title="TLSDEST", host="127.0.0.1", port=port, tls=True),
        ]
        for _ in range(50):  # storescp needs a moment to listen
            if dcmtk(
                "echoscu", *tls(pki.client, pki.ca.certificate), "-aec", "TLSDEST",
                "127.0.0.1", str(port),
            ).returncode == 0:  # fmt: skip
                break
            time.sleep(0.1)
        result = dcmtk(
            # movescu has no TLS: the request on the plain port, the sub-association in TLS.
            "movescu", "-S", "-aet", "MOVESCU", "-aem", "TLSDEST",
            "-aec", "VESALIUS", tls_server.host, str(tls_server.port),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        [arrived] = list(received.iterdir())
        assert dcmread(arrived).SOPInstanceUID == ds.SOPInstanceUID
    finally:
        storescp.terminate()
        storescp.wait(10)


def test_a_verified_certificate_stands_for_its_remote_ae(
    tls_server: TlsServer, pki: Pki, tmp_path: Path
) -> None:
    other = pki.ca.issue("other-client", "other-modality.test")
    settings = tls_server.container.settings
    settings.remote_ae = [
        *settings.remote_ae,
        # Listed for another host: only the certificate can stand for it.
        RemoteAE(
            name="certified", ae_title="CERTSCU", host="192.0.2.99", port=104,
            role="radiologist", certificate="modality.test",
        ),
    ]  # fmt: skip

    def find(port: int, *options: str | Path) -> str:
        out = tmp_path / f"found-{time.monotonic_ns()}"
        out.mkdir()
        result = dcmtk(
            "findscu", "-d", "-S", *options, "-aet", "CERTSCU", "-aec", "VESALIUS",
            tls_server.host, str(port), "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
        )  # fmt: skip
        return (result.stdout + result.stderr).lower()

    allowed = find(tls_server.tls_port, *tls(pki.client, pki.ca.certificate))
    assert "0x0124" not in allowed and "0x0000" in allowed
    # The same AE title without the certificate, or with another one, is refused.
    assert "0x0124" in find(tls_server.port)
    assert "0x0124" in find(tls_server.tls_port, *tls(other, pki.ca.certificate))


def test_peer_identity_reads_the_common_name() -> None:
    from vesalius.tls import peer_identity

    cert = {"subject": ((("countryName", "BE"),), (("commonName", "modality.test"),))}
    assert peer_identity(cert) == "modality.test"
    assert peer_identity({}) is None and peer_identity(None) is None


def test_a_route_forwards_to_a_tls_peer(make_settings: Any, pki: Pki, tmp_path: Path) -> None:
    """A [[route]] to a peer marked tls = true forwards over TLS (DCMTK storescp +tls)."""
    from vesalius.jobs.runner import JobRunner

    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    storescp = subprocess.Popen(
        [
            str(DCMTK / "storescp"), "-aet", "TLSDEST", "-od", str(received),
            *map(str, tls(pki.client, pki.ca.certificate)), str(port),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    settings = make_settings(
        # Our certificate is presented to the peer, which requires one (DCMTK's default).
        dicom_tls_certificate=pki.server.certificate,
        dicom_tls_private_key=pki.server.key,
        dicom_tls_ca_certificates=pki.ca.certificate,
        remote_ae=[RemoteAE(name="tlsdest", ae_title="TLSDEST", host="127.0.0.1", port=port,
                            tls=True)],
        route=[{"name": "all", "match": {"Modality": "CT"}, "to": "tlsdest"}],
    )  # fmt: skip
    container = build(settings, migrate=True)
    runner = JobRunner(container, poll_s=0.05, retry_base_s=0.3).start()
    try:
        ds = make_dataset(Modality="CT")
        container.archive.store(write(tmp_path / "in", ds).read_bytes(), origin="test")
        assert container.events.drain()
        deadline = time.monotonic() + 60
        while not list(received.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        from vesalius.index import jobs as jobs_sql

        with container.db.read() as session:
            forwards = jobs_sql.list_jobs(session, kind="route.forward")
        states = [(j.state, j.last_error) for j in forwards]
        arrived = list(received.iterdir())
        assert len(arrived) == 1, states
        assert dcmread(arrived[0]).SOPInstanceUID == ds.SOPInstanceUID
    finally:
        runner.stop()
        container.close()
        storescp.terminate()
        storescp.wait(10)
