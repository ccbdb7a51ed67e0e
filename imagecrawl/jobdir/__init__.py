"""``-s JOBDIR=DIR`` made safe: every scheduled request can be saved, none is dropped at a stop, and a crawl
that died is not resumed from a queue that cannot be trusted. Scrapy adapters only: ``extensions.py``
(``JobdirGuard``, ``ResumeGuard``) and ``downloadermiddlewares.py`` (``KeepOnCloseMiddleware``)."""
