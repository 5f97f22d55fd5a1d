"""The cluster label added to finished exposition text, and the JSON log format."""
from __future__ import annotations

import json
import logging

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kpod_agent import labels, runtime_info


def test_cluster_label_on_every_sample_of_the_text_format() -> None:
    registry = CollectorRegistry()
    c = Counter("kpod_x", "x", ["pod"], registry=registry)
    c.labels('a"} 1\nkpod_evil{pod="b').inc(3)
    Counter("kpod_bare", "no labels", registry=registry).inc()
    text = labels.add_label_to_text(generate_latest(registry), "cluster", 'eu\\1 "x"')
    samples = [s for f in text_string_to_metric_families(text.decode()) for s in f.samples]
    assert {s.name for s in samples} == {"kpod_x_total", "kpod_x_created", "kpod_bare_total", "kpod_bare_created"}
    assert all(s.labels["cluster"] == 'eu\\1 "x"' for s in samples)
    assert [s.labels["pod"] for s in samples if s.name == "kpod_x_total"] == ['a"} 1\nkpod_evil{pod="b']
    assert labels.add_label_to_text(b"kpod_y 1\n", "cluster", "") == b"kpod_y 1\n"


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
