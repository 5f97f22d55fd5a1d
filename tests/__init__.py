"""Test suite of kpod-metrics; a package so helpers import as tests.support.*."""
