"""The cluster label wrapper, and the JSON log format."""
from __future__ import annotations

import json
import logging

from prometheus_client import CollectorRegistry, Counter

from kpod_agent import labels, runtime_info


def test_cluster_label_on_collected_families() -> None:
    registry = CollectorRegistry()
    Counter("kpod_z", "z", ["pod"], registry=registry).labels("p").inc()
    wrapped = labels.ConstantLabel(registry, "cluster", lambda: "c1")
    assert all(s.labels == {"cluster": "c1", **({"pod": "p"})} for f in wrapped.collect() for s in f.samples)


def test_json_log_lines(capsys) -> None:  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    runtime_info.configure_logging("json", "info")
    try:
        logging.getLogger("kpod_test").info("hello %s", "world")
        logging.getLogger("kpod_test").debug("not shown")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("kpod_test").exception("failed")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    lines = capsys.readouterr().err.strip().splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["message"] for d in docs] == ["hello world", "failed"]
    assert docs[0]["level"] == "info" and docs[0]["logger"] == "kpod_test" and docs[0]["time"].endswith("Z")
    assert "ValueError: boom" in docs[1]["exception"]
