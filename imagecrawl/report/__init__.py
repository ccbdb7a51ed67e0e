"""Pure pieces of the crawl report: bounded time series and their rendering as self-contained HTML with
inline SVG plots. No Scrapy imports; the Scrapy shells live in ``imagecrawl.extensions``."""
