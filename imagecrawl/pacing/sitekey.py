"""What a "site" is: a host name, or its registered domain (``img.example.co.uk`` -> ``example.co.uk``)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

SITE_KEY_MODES = ("host", "domain")


@lru_cache(maxsize=1)
def _extractor() -> object:
    import tldextract

    # The snapshot bundled with tldextract: never fetch the public suffix list at run time.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=4096)
def site_of_host(host: str, mode: str = "host") -> str:
    host = host.lower().rstrip(".")
    if mode == "host" or not host:
        return host
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    ext = _extractor()(host)  # type: ignore[operator]
    registered = str(ext.top_domain_under_public_suffix or "")
    return registered or host


def site_of_url(url: str, mode: str = "host") -> str:
    return site_of_host(urlsplit(url).hostname or "", mode)
