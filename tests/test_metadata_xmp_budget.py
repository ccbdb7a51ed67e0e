"""An XMP data-mining refusal is found whatever the packet's size: text budgets that skip a large packet
never turn a refusal into permission. Uncompressed packets are searched in the bytes as they are;
compressed ones are inflated step by step up to a cap, and a packet that goes on past the cap without a
statement makes the file unreadable (refused as ``embedded_unreadable``), never silently allowed."""

from __future__ import annotations

import io
import zlib

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from imagecrawl.metadata.provenance import read_provenance
from imagecrawl.metadata.rights import scan_data_mining
from imagecrawl.metadata.types import Limits
from imagecrawl.records import EmbeddedOptOut, SourceHints, build_record

PLUS = 'xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/"'


def packet(filler_bytes: int, statement: str | None, *, form: str = "attr", first: bool = False) -> str:
    pad = "<rdf:li>" + "keyword " * 12 + "</rdf:li>\n"
    filler = pad * max(0, filler_bytes // len(pad))
    value = f"http://ns.useplus.org/ldf/vocab/{statement}"
    stmt = ""
    if statement is not None:
        stmt = {
            "attr": f'<rdf:Description rdf:about="" {PLUS} plus:DataMining="{value}"/>',
            "resource": f'<rdf:Description rdf:about="" {PLUS}>'
            f'<plus:DataMining rdf:resource="{value}"/></rdf:Description>',
            "element": f'<rdf:Description rdf:about="" xmlns:p2="http://ns.useplus.org/ldf/xmp/1.0/">'
            f"<p2:DataMining>{value}</p2:DataMining></rdf:Description>",
        }[form]
    bag = f'<rdf:Description rdf:about=""><dc:subject><rdf:Bag>{filler}</rdf:Bag></dc:subject></rdf:Description>'
    body = stmt + bag if first else bag + stmt
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'{body}</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )


def png_with_xmp(xmp: str, *, compressed: bool) -> bytes:
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp, zip=compressed)
    out = io.BytesIO()
    Image.new("RGB", (24, 24), (30, 60, 90)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def webp_with_xmp(xmp: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 24), (30, 60, 90)).save(out, "WEBP", xmp=xmp.encode())
    return out.getvalue()


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("form", ["attr", "resource", "element"])
@pytest.mark.parametrize("first", [False, True])
def test_a_refusal_in_a_packet_past_every_text_budget_is_found(compressed: bool, form: str, first: bool) -> None:
    data = png_with_xmp(packet(1_700_000, "DMI-PROHIBITED-AIMLTRAINING", form=form, first=first), compressed=compressed)
    limits = Limits()
    assert len(packet(1_700_000, None)) > limits.max_text_bytes  # the budgets alone would skip it
    provenance = read_provenance(data)
    assert provenance.xmp.data_mining == "DMI-PROHIBITED-AIMLTRAINING"
    assert provenance.refusal() == ("embedded_data_mining", "plus:DataMining DMI-PROHIBITED-AIMLTRAINING")
    with pytest.raises(EmbeddedOptOut) as refused:
        build_record(hints=SourceHints(source="urls"), image_url="http://h/x.png", body=data, salt=b"s")
    assert refused.value.reason == "embedded_data_mining"


def test_a_big_webp_packet_and_an_allowing_statement() -> None:
    refused = read_provenance(webp_with_xmp(packet(1_200_000, "DMI-PROHIBITED")))
    assert refused.refusal() is not None and refused.xmp.data_mining == "DMI-PROHIBITED"
    allowed = read_provenance(png_with_xmp(packet(1_700_000, "DMI-ALLOWED"), compressed=True))
    assert allowed.xmp.data_mining == "DMI-ALLOWED" and allowed.refusal() is None


def test_no_statement_at_all_is_no_refusal() -> None:
    for compressed in (False, True):
        provenance = read_provenance(png_with_xmp(packet(1_700_000, None), compressed=compressed))
        assert provenance.xmp.data_mining is None and provenance.refusal() is None


def test_a_compressed_packet_past_the_cap_is_unreadable_and_refused() -> None:
    data = png_with_xmp(packet(3_000_000, "DMI-PROHIBITED-AIMLTRAINING"), compressed=True)
    value, why = scan_data_mining(data, cap=1_000_000)  # the statement lies past the cap
    assert value is None and why is not None and "past 1000000 bytes" in why
    # a damaged compressed stream cannot say "allowed" either
    damaged = data.replace(zlib.compress(b"")[:2], b"\x78\x9c", 1)
    head = damaged.index(b"XML:com.adobe.xmp")
    broken = damaged[: head + 200] + b"\x00garbage\xff" * 8 + damaged[head + 280 :]
    value, why = scan_data_mining(broken)
    assert value is None and why is not None


def test_the_default_cap_refuses_a_bomb_of_xmp(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagecrawl.metadata import rights

    monkeypatch.setattr(rights, "XMP_SCAN_MAX_INFLATED_BYTES", 2_000_000)
    data = png_with_xmp(packet(4_000_000, None), compressed=True)
    provenance = read_provenance(data)
    assert provenance.refusal() is not None and provenance.refusal()[0] == "embedded_unreadable"  # type: ignore[index]
