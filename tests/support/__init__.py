"""The test-support package: the emulated API server, the fake kubelet, a
node of real cgroups, the agent and operator run by tests, one ``wait_for``,
and the shared fixtures (``fixtures.py``, a pytest plugin)."""
