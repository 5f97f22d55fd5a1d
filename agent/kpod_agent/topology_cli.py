"""kpod-agent topology: the service graph of one or several agents.

    kpod-agent topology --url URL[,URL...] [--format text|dot|mermaid|png|json] [--output FILE]

Reads each agent's /topology, merges them (topology.merge: an edge seen by
the agents of both of its ends counts once) and draws the graph: as a tree
in the terminal, as Graphviz DOT, as a Mermaid flowchart, as PNG (Graphviz
`dot`, Debian package graphviz) or as the merged JSON. An agent that cannot
be read is named on stderr; the others are still drawn. In a cluster, reach
every agent through a port-forward each, or the API server's proxy
(`kubectl proxy`, then .../api/v1/namespaces/kpod-system/pods/<pod>:9090/proxy).
"""
from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from kpod_agent import contract, topology

FORMATS = ("text", "dot", "mermaid", "png", "json")
TIMEOUT_SECONDS = 10.0


class FetchError(Exception):
    """One agent could not be read; the message names it and why."""


def topology_url(url: str) -> str:
    """host:port, http://host:port or a full URL; default path /topology."""
    return contract.agent_url(url, "/topology")


def fetch(url: str, timeout: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            doc = json.load(answer)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url} answered HTTP {exc.code} {exc.reason}: is it a kpod-agent with /topology?") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise FetchError(f"cannot reach {url} ({reason})") from None
    except ValueError as exc:
        raise FetchError(f"{url} answered something that is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("edges"), list):
        raise FetchError(f"{url} answered JSON without an edge list: not a kpod-agent /topology")
    return doc


def render(graph: dict[str, Any], fmt: str) -> bytes:
    if fmt == "text":
        return topology.render_text(graph).encode()
    if fmt == "mermaid":
        return topology.render_mermaid(graph).encode()
    if fmt == "json":
        return json.dumps(graph, indent=2, sort_keys=True).encode() + b"\n"
    dot = topology.render_dot(graph)
    if fmt == "dot":
        return dot.encode()
    return png_of(dot)


def png_of(dot: str) -> bytes:
    """DOT -> PNG through Graphviz; RuntimeError says what to install."""
    binary = shutil.which("dot")
    if binary is None:
        raise RuntimeError("PNG needs Graphviz's `dot` (apt-get install graphviz); "
                           "or write DOT with --format dot")
    done = subprocess.run([binary, "-Tpng"], input=dot.encode(), capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"dot -Tpng failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpod-agent topology",
        description="Merge the /topology of one or several agents and draw the service graph.",
        epilog="examples:\n"
               "  kpod-agent topology --url http://127.0.0.1:9090\n"
               "  kpod-agent topology --url 10.0.0.5:9090,10.0.0.6:9090 --format png --output graph.png\n"
               "  kpod-agent topology --url http://127.0.0.1:9090 --format mermaid",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", action="append", required=True, metavar="URL[,URL...]",
                        help="agents to read (comma-separated, or the flag repeated); /topology is added "
                             "when a URL has no path")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="text (terminal, default), dot, mermaid, png (needs Graphviz) or json (merged)")
    parser.add_argument("--output", metavar="FILE", help="write here instead of stdout (png: required on a terminal)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds per agent (default 10)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        urls = [topology_url(u.strip()) for value in args.url for u in value.split(",") if u.strip()]
    except ValueError as exc:
        print(f"kpod-agent topology: {exc}", file=sys.stderr)
        return 2
    if not urls:
        print("kpod-agent topology: --url names no agent", file=sys.stderr)
        return 2
    docs = []
    for url in urls:
        try:
            docs.append(fetch(url, args.timeout))
        except FetchError as exc:
            print(f"kpod-agent topology: {exc}", file=sys.stderr)
    if not docs:
        print("kpod-agent topology: no agent could be read", file=sys.stderr)
        return 1
    if args.format == "png" and args.output is None and sys.stdout.isatty():
        print("kpod-agent topology: PNG on a terminal: give --output FILE", file=sys.stderr)
        return 2
    try:
        body = render(topology.merge(docs), args.format)
    except RuntimeError as exc:
        print(f"kpod-agent topology: {exc}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "wb") as fh:
            fh.write(body)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    return 0 if len(docs) == len(urls) else 3
