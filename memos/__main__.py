"""`python -m memos`: the same command line as the `memos` script."""

from __future__ import annotations

from memos.cli import main

main()
