"""Shared test helpers: fake kubelet, emulated API server."""
