"""Exact and near-duplicate dedupe. The core (no Scrapy): the ledger protocol, the SQLite ledger on its own
thread, the pHash index. The Scrapy adapters: ``downloadermiddlewares.py`` (an image the store holds is not
downloaded again) and ``pipelines.py`` (a duplicate record is dropped)."""
