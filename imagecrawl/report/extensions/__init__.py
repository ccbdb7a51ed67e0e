"""The report's extensions, one a module: ``monitor`` (the time series), ``progress`` (the progress line),
``report`` (the end-of-crawl report), ``statsfile`` (the final stats as JSON), ``outcome`` (a crawl that got
nothing closes with a reason, exit 4)."""
