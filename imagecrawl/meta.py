"""Every ``Request.meta`` key imagecrawl reads or writes (documented in docs/meta.md). No Scrapy.

Keys a spider may set are marked *input*; the others are set by imagecrawl's own components.
"""

from __future__ import annotations

from typing import Final

#: input: what a request fetches: ``"page"`` (API, listing or detail page), ``"image"`` (an image
#: file: opt-out headers are decided before its body, the store is asked before it is fetched),
#: ``"tdmrep"`` (the TDMRep file, internal), ``"robots"`` (robots.txt, internal)
KIND: Final = "imagecrawl_kind"
#: input: the record id (``<source>:<source id>``) of an image request, so a known one is not fetched
RECORD_ID: Final = "imagecrawl_record_id"
#: input: ``"browser"`` renders the page in Chromium (scrapy-playwright), see docs/spiders.md
RENDER: Final = "imagecrawl_render"
#: input: a regex a healthy answer to this request must match (else it counts as a soft ban)
HEALTHY_MARKER: Final = "imagecrawl_healthy_marker"
#: input: ``True`` sends the request without waiting at the pacing gate (internal requests)
DONT_PACE: Final = "imagecrawl_dont_pace"

#: the pacing site this request was paced as (host or registered domain)
SITE: Final = "imagecrawl_site"
#: monotonic time the pacing gate let the request go
SENT_AT: Final = "imagecrawl_sent_at"
#: ``True`` while the request holds a pacing slot (released on its response or error); ``"policy"``
#: for a policy fetch (robots.txt) let through by the pacing middleware without a slot
PACING_GRANTED: Final = "imagecrawl_pacing_granted"
#: ``True`` when the frontier gave this request the short first-contact ``download_timeout``
#: (its site had not answered yet); a retry gets the normal timeout back
FIRST_CONTACT: Final = "imagecrawl_first_contact"
#: ``[-priority, start, sequence]``: the frontier's order key of a request it let out, so one that comes back
#: unsent (it would have waited long for its turn) takes its old place in its site's queue
FRONTIER_KEY: Final = "imagecrawl_frontier_key"
#: Unix time before which the pacing gate holds a retry (its backoff)
NOT_BEFORE: Final = "imagecrawl_not_before"
#: ``[first time, times]`` (Unix time, count) an image request went back to the frontier because another run
#: writing into the same store holds the claim on its image (docs/architecture.md, claims)
CLAIM_WAIT: Final = "imagecrawl_claim_wait"
#: seconds of the Retry-After the site sent with this request's 429/503
RETRY_AFTER: Final = "imagecrawl_retry_after"
#: ``(reason, detail)`` of an image abandoned at its headers because they opt it out
OPTOUT_SKIP: Final = "imagecrawl_optout"
#: ``{"reason", "detail"}`` of a page that opts its images out (the spider middleware drops them)
OPTOUT_PAGE: Final = "imagecrawl_optout_page"
#: the TDMRep file's reservation (0/1) for this URL, when a rule of the file matches it
TDM_FILE: Final = "imagecrawl_tdm_file"
#: the bytes received so far of a policy file (robots.txt, tdmrep.json), set on its request: its download
#: stops past ``IMAGECRAWL_TUNING['policy_max_bytes']`` and its body is not decompressed by the compression middleware
POLICY_FILE: Final = "imagecrawl_policy_file"
#: the kind of download error (``timeout``, ``dns``, ...) of a request that failed
DOWNLOAD_ERROR: Final = "imagecrawl_download_error"
#: the incremental walk (``<source>:<query>``) an image request belongs to: a download that fails
#: keeps the walk's watermark where it was
WALK: Final = "imagecrawl_walk"
#: distributed crawls: the lease id of a request popped from the shared frontier
LEASE: Final = "imagecrawl_lease"
#: ``imagecrawl recheck``: the site (origin) a recheck request asks about
RECHECK_SITE: Final = "imagecrawl_recheck_site"
#: the ``urls`` spider: the input row (its index in the list) an image request comes from, so a row that
#: gives no image gets its failure record (docs/spiders.md#urls)
INPUT_ROW: Final = "imagecrawl_input_row"

ALL: Final = (
    KIND,
    RECORD_ID,
    RENDER,
    HEALTHY_MARKER,
    DONT_PACE,
    SITE,
    SENT_AT,
    PACING_GRANTED,
    FIRST_CONTACT,
    FRONTIER_KEY,
    NOT_BEFORE,
    CLAIM_WAIT,
    RETRY_AFTER,
    OPTOUT_SKIP,
    OPTOUT_PAGE,
    TDM_FILE,
    POLICY_FILE,
    DOWNLOAD_ERROR,
    WALK,
    LEASE,
    RECHECK_SITE,
    INPUT_ROW,
)
