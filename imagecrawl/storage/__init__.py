"""The store and the crawl's output. The core (no Scrapy): spool and shards, the outbox, local and S3 stores,
the store layout, watermarks; ``context.py`` is the crawl context. The Scrapy adapters: ``extensions.py``
(``StorageOwner``, the owner of the store, ledger and near index) and ``pipelines.py`` (``ParquetPipeline``)."""
