"""The guards: an honest identity (a contact in the User-Agent, or no crawl of others' sites) and the network
guard (no loopback, private or metadata addresses, checked before each request and again at connect time by
the DNS resolver). Both are Scrapy adapters only: ``downloadermiddlewares/`` and ``resolver.py``."""
