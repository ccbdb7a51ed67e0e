"""Provenance readers on real public files (tests/fixtures/realworld/provenance, PROVENANCE.json):
the IPTC photo-metadata reference image and C2PA fixtures of the c2pa-rs SDK. The expected values
were read with exiftool and the c2pa-python Reader, not with these readers (README.md there)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from imagecrawl.metadata import extract_metadata
from imagecrawl.metadata.cli import PROVENANCE_FIELDS, main
from imagecrawl.metadata.credentials import read_credentials
from imagecrawl.metadata.rights import parse_xmp_rights, read_xmp_rights
from imagecrawl.records import EmbeddedOptOut, SourceHints, build_record

HERE = Path(__file__).resolve().parent / "fixtures" / "realworld"
FILES = HERE / "provenance"
ENTRIES: list[dict[str, Any]] = json.loads((FILES / "PROVENANCE.json").read_text(encoding="utf-8"))
BY_NAME = {e["file"]: e for e in ENTRIES}
IPTC = "xmp__IPTC-PhotometadataRef-Std2024.1.jpg"


def data(name: str) -> bytes:
    return (FILES / name).read_bytes()


def test_the_files_are_the_listed_ones_with_their_licences() -> None:
    listed = {e["file"] for e in ENTRIES}
    assert listed == {p.name for p in FILES.iterdir() if p.name != "PROVENANCE.json"}
    assert sum(e["bytes"] for e in ENTRIES) < 2_000_000
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    for entry in ENTRIES:
        body = data(entry["file"])
        assert len(body) == entry["bytes"] and hashlib.sha256(body).hexdigest() == entry["sha256"]
        assert entry["file"] in readme and entry["source_commit"] in readme
    licences = {p.name for p in (HERE / "licenses").iterdir()}
    for repo in ("c2pa-rs", "c2pa-python"):
        assert {f"{repo}_LICENSE-MIT.txt", f"{repo}_LICENSE-APACHE.txt"} <= licences
    assert "xmp_LICENSE.md" in licences


def test_the_expected_values_are_in_the_files_themselves() -> None:
    """The manifest's XMP values appear verbatim in the packet text and the C2PA ones in the CBOR."""
    iptc = data(IPTC)
    assert b"<plus:DataMining>http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-GENAIMLTRAINING<" in iptc
    assert b"<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/softwareImage<" in iptc
    assert b"cawg.ai_generative_training" in data("c2pa-rs__C_with_CAWG_data.jpg")
    assert b"Adobe Firefly" in data("c2pa-rs__ocsp.jpg")
    assert b'dcterms:provenance="http://localhost:5000/libpng-test.c2pa"' in data("c2pa-rs__libpng-test_with_url.png")


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["file"])
def test_metadata_cli_on_a_real_file(
    entry: dict[str, Any], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert main([str(FILES / entry["file"])]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in caplog.text
    rec = json.loads(out)
    got = {field: rec[field] for field in PROVENANCE_FIELDS}
    assert got == entry["expected"]
    # none of them carries generation metadata: the prompt readers stay silent
    assert rec["prompt"] is None and rec["metadata_source"] is None and "error" not in rec


def test_the_cli_reads_all_of_them_in_one_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FILES / e["file"]) for e in ENTRIES]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["file"].rsplit("/", 1)[-1] for line in lines] == [e["file"] for e in ENTRIES]


def test_the_iptc_reference_image_refuses_generative_training() -> None:
    rights = read_xmp_rights(data(IPTC))
    assert rights.data_mining == "DMI-PROHIBITED-GENAIMLTRAINING" and rights.refuses_training
    assert rights.digital_source_type == "softwareImage"
    assert read_credentials(data(IPTC)).present is False


def test_real_manifests_that_fail_validation_say_why() -> None:
    bad_signature = read_credentials(data("c2pa-rs__E-sig-CA.jpg"))
    assert bad_signature.validation == "invalid" and "claimSignature.mismatch" in bad_signature.failures
    tampered = read_credentials(data("c2pa-rs__XCA.jpg"))
    assert tampered.validation == "invalid" and "assertion.dataHash.mismatch" in tampered.failures
    good = read_credentials(data("c2pa-rs__C.jpg"))
    assert good.validation == "valid" and good.failures == ("signingCredential.untrusted",)
    unreadable = read_credentials(data("c2pa-rs__no_alg.jpg"))
    assert unreadable.present is False and unreadable.error == "Other: unknown algorithm"


def _record(name: str) -> Any:
    return build_record(
        hints=SourceHints(source="test", source_id=name),
        image_url=f"https://s.example/{name}",
        body=data(name),
        salt=b"s",
        now=datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [(IPTC, "embedded_data_mining"), ("c2pa-rs__C_with_CAWG_data.jpg", "embedded_c2pa")],
)
def test_the_crawler_refuses_the_real_files_that_forbid_training(name: str, reason: str) -> None:
    with pytest.raises(EmbeddedOptOut) as info:
        _record(name)
    assert info.value.reason == reason


def test_a_real_training_mining_assertion_that_allows_is_no_refusal() -> None:
    """Adobe Content Authenticity writes c2pa.training-mining and cawg.training-mining, both "allowed"."""
    name = "c2pa-rs__adobe_connected_identities.jpg"
    body = data(name)
    assert b"c2pa.training-mining" in body and b"cawg.training-mining" in body
    creds = read_credentials(body)
    assert creds.training_refusal is None and creds.claim_generator == "Adobe Content Authenticity"
    rec = _record(name)
    assert rec.c2pa_validation == "invalid" and rec.data_mining is None


def test_the_record_of_a_real_photoshop_firefly_file() -> None:
    rec = _record("c2pa-rs__ocsp.jpg")
    want = BY_NAME["c2pa-rs__ocsp.jpg"]["expected"]
    assert rec.digital_source_type == "compositeWithTrainedAlgorithmicMedia"
    assert rec.c2pa_claim_generator == "Adobe Photoshop 26.9.0" and rec.c2pa_validation == "valid"
    assert rec.c2pa_actions is not None and json.loads(rec.c2pa_actions) == want["c2pa_actions"]
    assert extract_metadata(data("c2pa-rs__ocsp.jpg")).found() is False


@pytest.mark.parametrize(
    ("packet", "url"),
    [
        (
            '<rdf:Description xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="https://m.example/a.c2pa"/>',
            "https://m.example/a.c2pa",
        ),
        (
            '<rdf:Description xmlns:dct="http://purl.org/dc/terms/"><dct:provenance>http://m.example/b</dct:provenance>'
            "</rdf:Description>",
            "http://m.example/b",
        ),
        # a provenance statement in words is not a manifest address
        ('<rdf:Description xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="Gift of the artist"/>', None),
        ('<rdf:Description xmlns:dcterms="http://purl.org/dc/terms/"/>', None),
    ],
    ids=["attribute", "element", "words", "absent"],
)
def test_remote_manifest_address_from_dcterms_provenance(packet: str, url: str | None) -> None:
    assert parse_xmp_rights(f"<x:xmpmeta>{packet}</x:xmpmeta>").c2pa_manifest_url == url


@pytest.mark.e2e
def test_the_installed_command_prints_them_without_a_traceback() -> None:
    """``imagecrawl metadata FILE...`` as a user runs it, on every real file at once."""
    command = Path(sys.executable).with_name("imagecrawl")
    proc = subprocess.run(
        [str(command), "metadata", *(str(FILES / e["file"]) for e in ENTRIES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [{f: r[f] for f in PROVENANCE_FIELDS} for r in records] == [e["expected"] for e in ENTRIES]
