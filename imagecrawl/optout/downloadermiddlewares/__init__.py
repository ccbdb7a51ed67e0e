"""The opt-out downloader middlewares, one a module: ``robots`` (robots.txt), ``optout`` (TDMRep, AI
preferences, X-Robots-Tag)."""
