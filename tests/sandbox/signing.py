"""C2PA-signed files for the sandbox and the tests: c2pa-python and a throw-away certificate chain
made on the spot, in memory (ES256: a root CA, an intermediate, an end-entity with the
emailProtection EKU C2PA asks for). Nothing here is trusted by anyone, which is the point."""

from __future__ import annotations

import datetime as dt
import io
import json
from functools import lru_cache
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "t")])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@lru_cache(maxsize=1)
def credentials() -> tuple[bytes, bytes]:
    """(PEM certificate chain, end-entity first; PEM private key) of a fresh throw-away chain."""
    root_key, mid_key, ee_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    mid = _cert("test intermediate", mid_key, "test root", root_key, ca=True)
    ee = _cert("test signer", ee_key, "test intermediate", mid_key, ca=False)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (ee, mid))
    key = ee_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, key


def manifest(
    training: str | None = "notAllowed", label: str = "c2pa.training-mining", created: bool = True
) -> dict[str, Any]:
    """A manifest definition: an action (``c2pa.created`` by a generator) and a training-mining assertion."""
    assertions: list[dict[str, Any]] = []
    if created:
        assertions.append(
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
                            "softwareAgent": {"name": "TestDiffusion", "version": "2.1"},
                        }
                    ]
                },
            }
        )
    if training is not None:
        prefix = label.split(".", 1)[0]
        assertions.append(
            {
                "label": label,
                "data": {
                    "entries": {
                        f"{prefix}.ai_generative_training": {"use": training},
                        f"{prefix}.ai_inference": {"use": "allowed"},
                    }
                },
            }
        )
    return {
        "claim_generator_info": [{"name": "imagecrawl-tests", "version": "1.0"}],
        "title": "signed test image",
        "assertions": assertions,
    }


def sign(image: bytes, fmt: str, definition: dict[str, Any]) -> bytes:
    """``image`` with a C2PA manifest embedded, signed by the throw-away chain."""
    chain, key = credentials()
    info = c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=key, ta_url=None)
    signer = c2pa.Signer.from_info(info)
    context = c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))
    builder = c2pa.Builder(json.dumps(definition), context=context)
    out = io.BytesIO()
    builder.sign(signer, MIME[fmt], io.BytesIO(image), out)
    return out.getvalue()
