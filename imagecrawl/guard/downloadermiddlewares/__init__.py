"""The guard's downloader middlewares, one a module: ``identity`` (no crawl of others' sites without a contact),
``netguard`` (no private networks)."""
