"""MemOS-compatible router modules (in-process functions at the seed's import paths)."""
