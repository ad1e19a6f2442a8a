"""DICOM TLS (PS3.15 Annex B.9, the BCP 195 profile): the SSL contexts of both directions.

:func:`server_context` is what a DICOM listener wraps its accepted connections in (the
``dicom_tls_port``); :func:`client_context` is what Vesalius uses to open an association to a
peer marked ``tls = true`` (C-MOVE). Both follow BCP 195 as DCMTK's default
``--profile-bcp195-nd`` does: TLS 1.2 or 1.3 only, forward-secret AEAD cipher suites, no
compression, no renegotiation. Any network layer can use them (asyncio's ``start_server(ssl=)``,
pynetdicom's ``ssl_context`` / ``tls_args``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from vesalius.config import ConfigError, Settings

# TLS 1.2 suites of BCP 195 (RFC 9325 4.2) that OpenSSL names; TLS 1.3 suites are all AEAD.
BCP195_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    ]
)
HANDSHAKE_TIMEOUT = 15.0  # seconds: a peer that stalls the handshake is dropped


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return context


def _exists(path: Path, setting: str) -> None:
    if not path.is_file():
        raise ConfigError(f"DICOM TLS: {setting} {path} does not exist or is not a file")


def _load_chain(context: ssl.SSLContext, certificate: Path, key: Path) -> None:
    _exists(certificate, "dicom_tls_certificate")
    _exists(key, "dicom_tls_private_key")
    try:
        context.load_cert_chain(str(certificate), str(key))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"DICOM TLS: cannot use the certificate {certificate} with the key {key} "
            f"({exc.reason or exc}); both must be PEM, unencrypted, and belong together"
        ) from None


def _load_cas(context: ssl.SSLContext, cas: Path) -> None:
    _exists(cas, "dicom_tls_ca_certificates")
    try:
        context.load_verify_locations(cafile=str(cas))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"DICOM TLS: cannot read the CA certificates {cas} ({exc}); give a PEM file"
        ) from None


def peer_identity(certificate: Any) -> str | None:
    """The subject common name of a verified peer certificate (``getpeercert()``), or None.

    A listener that asks for client certificates (``dicom_tls_ca_certificates``) only
    completes handshakes with verified ones, so the name can bind the caller to the
    ``[[remote_ae]]`` whose ``certificate`` it is.
    """
    if not isinstance(certificate, dict):
        return None
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def server_context(settings: Settings) -> ssl.SSLContext:
    """The context of the DICOM TLS listener.

    With ``dicom_tls_ca_certificates`` a client must present a certificate signed by one of
    those CAs (expired or foreign certificates fail the handshake); without, any client may
    connect and the association rules alone decide.

    Raises
    ------
    ConfigError
        When the certificate, key or CA file is missing or unusable (the message says which).
    """
    if settings.dicom_tls_certificate is None or settings.dicom_tls_private_key is None:
        raise ConfigError(
            "dicom_tls_port needs dicom_tls_certificate and dicom_tls_private_key "
            "(VESALIUS_DICOM_TLS_CERTIFICATE, VESALIUS_DICOM_TLS_PRIVATE_KEY)"
        )
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(context, settings.dicom_tls_certificate, settings.dicom_tls_private_key)
    if settings.dicom_tls_ca_certificates is not None:
        _load_cas(context, settings.dicom_tls_ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """The context for associations Vesalius opens to peers marked ``tls = true``.

    The peer's certificate is verified against ``dicom_tls_ca_certificates`` (the system's
    CAs when unset); Vesalius presents its own certificate when it has one. Host names are
    not checked: DICOM peers are known by AE title and address, not by DNS name.
    """
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if settings.dicom_tls_ca_certificates is not None:
        _load_cas(context, settings.dicom_tls_ca_certificates)
    else:
        context.load_default_certs()
    if settings.dicom_tls_certificate is not None and settings.dicom_tls_private_key is not None:
        _load_chain(context, settings.dicom_tls_certificate, settings.dicom_tls_private_key)
    return context
