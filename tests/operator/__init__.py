"""Operator tests: render/status units and kopf against an emulated API server."""
