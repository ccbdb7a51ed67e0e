"""Forgetting rows on request: selectors, tombstones, the journaled shard rewrite, the audit log, and
the ``forget`` and ``recheck`` commands (docs/forget.md)."""
