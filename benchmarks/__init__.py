"""The benchmarks: each module is a command, run from the repository's root as
``uv run python -m benchmarks.<name> [--help]`` (docs/benchmarks.md). Shared helpers are in
:mod:`benchmarks.common`; the sandbox, the static site and the scoring of politeness runs come from
``tests/`` (the tests never import the benchmarks)."""
