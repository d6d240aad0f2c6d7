"""Local servers that stand in for remote endpoints in tests: files over HTTP, OpenAI-compatible chat."""
