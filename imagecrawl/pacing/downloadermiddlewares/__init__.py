"""The pacing downloader middlewares, one a module: ``pacing`` (the per-site gate and its feedback), ``bans``
(ban detection), ``retry`` (retries later, through the gate)."""
