"""TLS and SASL for the Faust (aiokafka) clients, from the same settings as the others.

``core.settings`` reads ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_*`` into
librdkafka properties, which the confluent-kafka clients take as they are. aiokafka wants an
:class:`ssl.SSLContext` and Faust credential objects instead; they are built here from those
same properties so that both kinds of client trust the same CA, present the same client
certificate and check the broker's name the same way. Secrets never appear in an error message,
and :func:`redacted` gives a client configuration fit for a log line.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import faust
from faust.types.auth import CredentialsT

from core.errors import ConfigurationError
from core.settings import SECRET_PROPERTIES

PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
SASL_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
REDACTED = "[redacted]"


def protocol(security: Mapping[str, str]) -> str:
    """``security.protocol`` upper-cased (``PLAINTEXT`` when unset); unknown values refused."""
    value = security.get("security.protocol", "PLAINTEXT").upper()
    if value not in PROTOCOLS:
        raise ConfigurationError(
            f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(sorted(PROTOCOLS))}, got {value!r}"
        )
    return value


def ssl_context(security: Mapping[str, str]) -> ssl.SSLContext | None:
    """The client TLS context librdkafka would use for ``security``; None without TLS.

    * ``ssl.ca.location``: the CA bundle to trust (the system store when unset);
    * ``ssl.certificate.location`` / ``ssl.key.location`` / ``ssl.key.password``: the client
      certificate for mutual TLS (the key may sit in the certificate file);
    * ``ssl.endpoint.identification.algorithm``: ``https`` (librdkafka's default) checks the
      broker's name against its certificate, ``none`` does not.
    """
    if "SSL" not in protocol(security):
        return None
    algorithm = security.get("ssl.endpoint.identification.algorithm", "https").lower()
    if algorithm not in {"https", "none"}:
        raise ConfigurationError(
            f"KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM must be https or none, got {algorithm!r}"
        )
    context = ssl.create_default_context(cafile=security.get("ssl.ca.location"))
    certificate = security.get("ssl.certificate.location")
    if certificate:
        context.load_cert_chain(
            certificate, security.get("ssl.key.location"), security.get("ssl.key.password")
        )
    elif security.get("ssl.key.location"):
        raise ConfigurationError(
            "KAFKA_SSL_KEY_LOCATION is set without KAFKA_SSL_CERTIFICATE_LOCATION"
        )
    if algorithm == "none":
        context.check_hostname = False
    return context


def faust_credentials(security: Mapping[str, str]) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for ``security``; None for ``PLAINTEXT``."""
    kind = protocol(security)
    if kind == "PLAINTEXT":
        return None
    context = ssl_context(security)
    if kind.startswith("SASL"):
        mechanism = security.get("sasl.mechanism", "").upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigurationError(
                f"KAFKA_SASL_MECHANISM must be one of {', '.join(sorted(SASL_MECHANISMS))} "
                f"with {kind}, got {mechanism or 'nothing'!r}"
            )
        if not security.get("sasl.username") or not security.get("sasl.password"):
            raise ConfigurationError(f"{kind} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        credentials: CredentialsT = faust.SASLCredentials(
            username=security["sasl.username"],
            password=security["sasl.password"],
            mechanism=mechanism,
            ssl_context=context,
        )
        return credentials
    ssl_credentials: CredentialsT = faust.SSLCredentials(context)
    return ssl_credentials


def redacted(config: Mapping[str, str]) -> dict[str, str]:
    """``config`` with every secret (SASL password, key password) replaced, for logging."""
    return {key: REDACTED if key in SECRET_PROPERTIES else value for key, value in config.items()}
