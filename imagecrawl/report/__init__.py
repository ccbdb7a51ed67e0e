"""Pure pieces of the crawl report: bounded time series and their rendering as self-contained HTML with
inline SVG plots. No Scrapy imports there; the Scrapy adapters are ``extensions/`` (monitor, progress line,
report, stats file, crawl outcome)."""
