"""A kubeconfig for the emulated API server (plain http, a dummy token), as
the operator and agent commands read it from KUBECONFIG."""
from __future__ import annotations

import pathlib

import yaml


def write_kubeconfig(path: pathlib.Path, server: str) -> pathlib.Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": server}}],
        "users": [{"name": "emu", "user": {"token": "test"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}],
    }))
    return path
