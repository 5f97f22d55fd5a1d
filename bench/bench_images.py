"""Image sizes: what each megabyte of kpod-agent:dev and kpod-operator:dev is.

    sudo python -m bench.bench_images            (builds the images first, as make images)
    sudo python -m bench.bench_images --no-build

Sizes are uncompressed (`docker image inspect .Size`, what a node stores),
with each image's share of its Debian base measured in the same run.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from bench.common import ROOT, table

AGENT, OPERATOR = "kpod-agent:dev", "kpod-operator:dev"
TARGETS = {AGENT: 400e6, OPERATOR: 200e6}
SITE = "/opt/kpod/lib/python3*/site-packages"
AIOHTTP_STACK = " ".join(f"{SITE}/{name}" for name in ("aiohttp*", "multidict", "yarl", "propcache", "frozenlist"))
# Parts of an image, as shell globs inside it (du -cb sums them).
PARTS = {
    AGENT: [
        ("LLVM (libLLVM, for bcc)", "/usr/lib/x86_64-linux-gnu/libLLVM*"),
        ("clang (libclang-cpp, for bcc)", "/usr/lib/x86_64-linux-gnu/libclang-cpp*"),
        ("z3 (LLVM's dependency)", "/usr/lib/x86_64-linux-gnu/libz3*"),
        ("bcc (libbcc, python3-bpfcc)", "/usr/lib/x86_64-linux-gnu/libbcc* /usr/lib/python3/dist-packages/bcc"),
        ("Python 3.13 (stdlib, libpython)",
         "/usr/lib/python3.13 /usr/lib/x86_64-linux-gnu/libpython3* /usr/bin/python3.13"),
        ("venv: kubernetes client", "/opt/kpod/lib/python3*/site-packages/kubernetes"),
        ("venv: OpenTelemetry SDK, OTLP exporter, protobuf",
         f"{SITE}/opentelemetry {SITE}/google {SITE}/opentelemetry_* {SITE}/protobuf-* {SITE}/googleapis_*"),
        ("venv: pydantic", "/opt/kpod/lib/python3*/site-packages/pydantic*"),
        ("venv: kpod-metrics", "/opt/kpod/lib/python3*/site-packages/kpod_* /usr/share/kpod"),
        ("venv: everything", "/opt/kpod"),
    ],
    OPERATOR: [
        ("Python 3.13 (stdlib, libpython)",
         "/usr/lib/python3.13 /usr/lib/x86_64-linux-gnu/libpython3* /usr/bin/python3.13"),
        ("venv: kubernetes client", "/opt/kpod/lib/python3*/site-packages/kubernetes"),
        ("venv: aiohttp stack (kopf)", AIOHTTP_STACK),
        ("venv: kopf", "/opt/kpod/lib/python3*/site-packages/kopf"),
        ("venv: pydantic", "/opt/kpod/lib/python3*/site-packages/pydantic*"),
        ("venv: everything", "/opt/kpod"),
    ],
}


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def size(image: str) -> int:
    return int(docker("image", "inspect", "-f", "{{ .Size }}", image))


def du(image: str, globs: str) -> int:
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                 f"du -cbs {globs} 2>/dev/null | tail -n1")
    return int(out.split()[0])


def base_image() -> str:
    for line in (ROOT / "Dockerfile.agent").read_text().splitlines():
        if line.startswith("ARG DEBIAN_IMAGE="):
            return line.split("=", 1)[1]
    sys.exit("Dockerfile.agent names no DEBIAN_IMAGE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-build", action="store_true", help="measure the images as they are")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run([ROOT / "scripts" / "images.sh"], check=True)
    base = base_image()
    base_size = size(base)
    for image in (AGENT, OPERATOR):
        total = size(image)
        rows = [("part", "MB", "share of image")]
        rows.append((f"Debian base ({base})", f"{base_size / 1e6:.1f}", f"{base_size / total:.0%}"))
        for label, globs in PARTS[image]:
            part = du(image, globs)
            rows.append((label, f"{part / 1e6:.1f}", f"{part / total:.0%}"))
        rows.append(("image total", f"{total / 1e6:.1f}",
                     f"{total / base_size:.2f}x base; target {TARGETS[image] / 1e6:.0f} MB "
                     f"({'met' if total <= TARGETS[image] else 'MISSED'})"))
        table(image, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
