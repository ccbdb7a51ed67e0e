"""The file readers of rights and provenance: XMP ``plus:DataMining`` / ``Iptc4xmpExt:DigitalSourceType``
in PNG, JPEG and WebP, and C2PA manifests read with c2pa-python (files signed here with a throw-away
certificate, one with a bad signature, one whose pixels were changed after signing); the record's
provenance columns and the ``imagecrawl metadata`` output."""

from __future__ import annotations

import asyncio
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request
from scrapy.http import Response

from imagecrawl.items import PromptImage
from imagecrawl.metadata.cli import main
from imagecrawl.metadata.credentials import read_credentials
from imagecrawl.metadata.provenance import read_provenance
from imagecrawl.metadata.rights import find_xmp, parse_xmp_rights, read_xmp_rights
from imagecrawl.optout.downloadermiddlewares.optout import skip_log
from imagecrawl.records import EmbeddedOptOut, SourceHints, build_record
from tests.crawlers import make_crawler
from tests.realworld import REALWORLD
from tests.sandbox.signing import manifest, sign
from tests.sandbox.sites.aipref import picture, xmp_packet
from tests.sitespider import SiteSpider

FORMATS = ("PNG", "JPEG", "WEBP")


@pytest.mark.parametrize("fmt", FORMATS)
def test_xmp_data_mining_and_source_type_in_each_container(fmt: str) -> None:
    data = picture("k", fmt, xmp_packet("DMI-PROHIBITED-GENAIMLTRAINING", "compositeWithTrainedAlgorithmicMedia"))
    rights = read_xmp_rights(data)
    assert rights.data_mining == "DMI-PROHIBITED-GENAIMLTRAINING" and rights.refuses_training
    assert rights.digital_source_type == "compositeWithTrainedAlgorithmicMedia"
    assert read_xmp_rights(picture("k", fmt)).data_mining is None
    assert find_xmp(picture("k", fmt)) is None


@pytest.mark.parametrize(
    ("value", "refuses"),
    [
        ("DMI-PROHIBITED-AIMLTRAINING", True),
        ("DMI-PROHIBITED-GENAIMLTRAINING", True),
        ("DMI-PROHIBITED", True),
        ("DMI-PROHIBITED-SEECONSTRAINT", True),  # a constraint a crawler cannot evaluate
        ("DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING", True),
        ("DMI-ALLOWED", False),
        ("DMI-UNSPECIFIED", False),
    ],
)
def test_plus_vocabulary(value: str, refuses: bool) -> None:
    assert parse_xmp_rights(xmp_packet(value).decode()).refuses_training is refuses


def test_attribute_and_element_forms_and_other_prefixes() -> None:
    attribute = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:p="http://ns.useplus.org/ldf/xmp/1.0/" xmlns:ie="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' p:DataMining="http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"'
        ' ie:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    rights = parse_xmp_rights(attribute)
    assert (rights.data_mining, rights.digital_source_type) == (
        "DMI-PROHIBITED-AIMLTRAINING",
        "trainedAlgorithmicMedia",
    )
    element = "<plus:DataMining>http://ns.useplus.org/ldf/vocab/DMI-ALLOWED</plus:DataMining>"
    assert parse_xmp_rights(element).data_mining == "DMI-ALLOWED"
    other = "<Iptc4xmpExt:DigitalSourceType>https://example.org/made-by-hand</Iptc4xmpExt:DigitalSourceType>"
    assert parse_xmp_rights(other).digital_source_type == "https://example.org/made-by-hand"
    assert parse_xmp_rights("<plus:DataMiningX>DMI-PROHIBITED</plus:DataMiningX>").data_mining is None
    assert parse_xmp_rights("<plus:DataMining") == parse_xmp_rights(None)


def test_real_files_state_no_refusal_and_never_crash() -> None:
    """The real-world corpus (GIMP XMP, A1111, ComfyUI, ...): no file there forbids training."""
    files = sorted(
        p for p in (REALWORLD / "images").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
    )
    assert files
    for path in files:
        provenance = read_provenance(path.read_bytes())
        assert provenance.refusal() is None, path.name
        assert provenance.c2pa.validation is None, path.name


@pytest.mark.parametrize("fmt", FORMATS)
def test_c2pa_training_mining_claim_generator_and_actions(fmt: str) -> None:
    data = sign(picture("c", fmt), fmt, manifest("notAllowed"))
    creds = read_credentials(data)
    assert creds.training_refusal == "c2pa.ai_generative_training: notAllowed"
    assert creds.claim_generator == "imagecrawl-tests 1.0"
    assert creds.actions == (
        {
            "action": "c2pa.created",
            "software_agent": "TestDiffusion 2.1",
            "digital_source_type": "trainedAlgorithmicMedia",
        },
    )
    assert creds.validation == "valid"  # signature and hashes hold; the throw-away signer is untrusted
    assert read_provenance(data).refusal() == (
        "embedded_c2pa",
        "c2pa training-mining c2pa.ai_generative_training: notAllowed",
    )


@pytest.mark.parametrize(
    ("use", "label", "refusal"),
    [
        ("allowed", "c2pa.training-mining", None),
        ("constrained", "c2pa.training-mining", "c2pa.ai_generative_training: constrained"),
        ("notAllowed", "cawg.training-mining", "cawg.ai_generative_training: notAllowed"),
        (None, "c2pa.training-mining", None),
    ],
)
def test_c2pa_training_mining_uses(use: str | None, label: str, refusal: str | None) -> None:
    creds = read_credentials(sign(picture("u", "PNG"), "PNG", manifest(use, label=label)))
    assert creds.training_refusal == refusal
    assert creds.claim_generator == "imagecrawl-tests 1.0"


def test_a_bad_signature_is_invalid_and_its_refusal_still_honoured() -> None:
    data = bytearray(sign(picture("b", "PNG"), "PNG", manifest("notAllowed")))
    at = data.find(b"caBX")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    data[at + 4 + length - 10] ^= 0x01  # inside the COSE signature, the last box of the manifest
    creds = read_credentials(bytes(data))
    assert creds.validation == "invalid"
    assert "claimSignature.mismatch" in creds.failures
    assert creds.training_refusal is not None


def test_pixels_changed_after_signing_are_invalid() -> None:
    data = bytearray(sign(picture("t", "JPEG"), "JPEG", manifest(None)))
    data[-100] ^= 0xFF  # the entropy-coded scan, covered by the data hash
    creds = read_credentials(bytes(data))
    assert creds.validation == "invalid" and "assertion.dataHash.mismatch" in creds.failures
    assert creds.training_refusal is None and creds.claim_generator == "imagecrawl-tests 1.0"


def test_unreadable_or_absent_manifests_never_raise() -> None:
    assert read_credentials(picture("n", "PNG")).validation is None
    assert read_credentials(b"\x89PNG\r\n\x1a\n" + b"jumb" * 10).claim_generator is None
    assert read_credentials(b"").validation is None


def record(body: bytes, **kwargs: bool) -> PromptImage:
    hints = SourceHints(source="test", source_id="1")
    return build_record(
        hints=hints, image_url="https://s.example/a", body=body, salt=b"s", now=datetime.now(UTC), **kwargs
    )


def test_the_record_carries_provenance_and_a_refusing_file_raises() -> None:
    signed = sign(picture("r", "WEBP", xmp_packet("DMI-ALLOWED", "digitalCapture")), "WEBP", manifest("allowed"))
    rec = record(signed)
    assert rec.digital_source_type == "digitalCapture"  # XMP beats the C2PA action
    assert rec.data_mining == "DMI-ALLOWED"
    assert rec.c2pa_claim_generator == "imagecrawl-tests 1.0"
    assert json.loads(rec.c2pa_actions)[0]["action"] == "c2pa.created"
    assert rec.c2pa_validation == "valid"
    refusing = picture("r", "PNG", xmp_packet("DMI-PROHIBITED-AIMLTRAINING"))
    with pytest.raises(EmbeddedOptOut) as info:
        record(refusing)
    assert info.value.reason == "embedded_data_mining"
    assert record(refusing, embedded_optout=False).data_mining == "DMI-PROHIBITED-AIMLTRAINING"


def test_metadata_cli_prints_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "signed.png"
    path.write_bytes(sign(picture("m", "PNG"), "PNG", manifest("notAllowed")))
    assert main([str(path)]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["c2pa_claim_generator"] == "imagecrawl-tests 1.0" and rec["c2pa_validation"] == "valid"
    assert rec["digital_source_type"] == "trainedAlgorithmicMedia"
    assert rec["c2pa_actions"][0]["software_agent"] == "TestDiffusion 2.1"
    assert rec["training_refusal"].startswith("embedded_c2pa: ")


def _parse_image(tmp_path: Path, body: bytes, url: str = "https://s.example/a.png", **settings: Any) -> Any:
    crawler = make_crawler(SiteSpider, IMAGECRAWL_STORE=str(tmp_path), IMAGECRAWL_AUTHOR_SALT="s", **settings)
    crawler._apply_settings()
    crawler.stats.open_spider()
    spider = SiteSpider.from_crawler(crawler, start="https://s.example/")
    response = Response(url, body=body, request=Request(url))

    async def collect() -> list[Any]:
        return [r async for r in spider.parse_image(response, SourceHints(source="site").to_meta())]

    return crawler, asyncio.run(collect())


def test_the_spider_drops_a_refusing_file_counts_and_lists_it(tmp_path: Path) -> None:
    refusing = picture("s", "JPEG", xmp_packet("DMI-PROHIBITED"))
    crawler, records = _parse_image(tmp_path, refusing)
    assert records == []
    assert crawler.stats.get_value("imagecrawl/optout/embedded_data_mining") == 1
    skip_log(crawler).close()
    [line] = [json.loads(x) for x in (tmp_path / ".imagecrawl" / "state" / "optout.jsonl").read_text().splitlines()]
    assert (line["reason"], line["detail"]) == ("embedded_data_mining", "plus:DataMining DMI-PROHIBITED")
    crawler, records = _parse_image(tmp_path, refusing, IMAGECRAWL_TUNING={"optout_embedded": False})
    assert [r.data_mining for r in records] == ["DMI-PROHIBITED"]
    assert crawler.stats.get_value("imagecrawl/optout/embedded_data_mining") is None
    owned = "https://mine.example/a.jpg"
    _, records = _parse_image(tmp_path, refusing, owned, IMAGECRAWL_OPTOUT_OWNED_HOSTS=["mine.example"])
    assert len(records) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_manifests_never_crash_the_reader(fmt: str) -> None:
    """Truncated and bit-flipped signed files (hostile downloads): a result every time, never an exception."""
    data = sign(picture("d", fmt), fmt, manifest("notAllowed"))
    start = data.find(b"jumb")
    assert start > 0
    states = set()
    for step in range(40):
        at = start + (len(data) - start) * step // 40
        flipped = bytearray(data)
        flipped[at] ^= 0xA5
        for damaged in (bytes(flipped), data[:at]):
            creds = read_credentials(damaged)
            states.add(creds.validation if creds.error is None else "error")
    assert "invalid" in states or "error" in states
