"""Where an image came from and what its file says about training: XMP rights + C2PA, in one read.

Pure (no Scrapy). :func:`read_provenance` gives the v2 columns of the record and, when the file
forbids training a generative model, the refusal (``embedded_data_mining`` for XMP
``plus:DataMining``, ``embedded_c2pa`` for a C2PA training-mining assertion, ``embedded_unreadable``
when an XMP packet could not be read to its end for its statement).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from imagecrawl.metadata.credentials import Credentials, read_credentials
from imagecrawl.metadata.rights import XmpRights, read_xmp_rights
from imagecrawl.metadata.types import Limits


@dataclass(frozen=True, slots=True)
class Provenance:
    xmp: XmpRights
    c2pa: Credentials

    @property
    def digital_source_type(self) -> str | None:
        """IPTC digital source type: the XMP statement, else the C2PA actions'."""
        return self.xmp.digital_source_type or self.c2pa.digital_source_type()

    def refusal(self) -> tuple[str, str] | None:
        """``(reason, detail)`` when the file forbids training, else None (XMP first, then C2PA)."""
        if self.xmp.refuses_training:
            return "embedded_data_mining", f"plus:DataMining {self.xmp.data_mining}"
        if self.xmp.unreadable is not None:  # a refusal we could not read is not permission
            return "embedded_unreadable", f"XMP data-mining statement unreadable: {self.xmp.unreadable}"
        if self.c2pa.training_refusal is not None:
            return "embedded_c2pa", f"c2pa training-mining {self.c2pa.training_refusal}"
        return None

    def columns(self) -> dict[str, str | None]:
        """The record's provenance columns (schema v2)."""
        actions = json.dumps(list(self.c2pa.actions), ensure_ascii=False) if self.c2pa.actions else None
        return {
            "digital_source_type": self.digital_source_type,
            "data_mining": self.xmp.data_mining,
            "c2pa_claim_generator": self.c2pa.claim_generator,
            "c2pa_actions": actions,
            "c2pa_validation": self.c2pa.validation,
        }


def read_provenance(data: bytes, limits: Limits | None = None, *, c2pa: bool = True) -> Provenance:
    """XMP rights and (unless ``c2pa`` is False) C2PA credentials of an image file (never raises)."""
    return Provenance(xmp=read_xmp_rights(data, limits), c2pa=read_credentials(data) if c2pa else Credentials())
