"""Security and isolation suite: every case of issue 11 through the real HTTP server on loopback."""
