"""The KV-cache warmer consumer: its stage, cache keeper, cross-process handoff and scoring state."""
