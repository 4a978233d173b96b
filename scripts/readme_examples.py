"""Re-run the README's HTTP examples against a freshly trained demo model and rewrite their outputs,
so the outputs in the README cannot drift from what the code does.

    .venv/bin/python scripts/readme_examples.py            # rewrite README.md in place
    .venv/bin/python scripts/readme_examples.py --check    # exit 1 if README.md would change

Each output block sits between `<!-- readme-example: NAME -->` and `<!-- /readme-example -->`
and holds one fenced block; NAME is a key of `EXAMPLES` (method, path, body). The demo model comes
from `vae-anomaly demo --no-serve` (seeded data and training: the same model id on the same machine
and library versions), served by `vae-anomaly serve` on a free port.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from vae_anomaly.training.demo_data import demo_records

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- readme-example: ([a-z0-9-]+) -->\n```(\w*)\n(.*?)```\n<!-- /readme-example -->", re.DOTALL)
OPEN_MARKER = re.compile(r"<!-- readme-example: ([a-z0-9-]+) -->")
CLOSE_MARKER = "<!-- /readme-example -->"

DEMO_RECORD, ANOMALOUS_RECORD = demo_records()
"""The records `make demo` prints curls for: the README shows the answers to both."""
EXAMPLES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "score": ("POST", "/score", {"records": [DEMO_RECORD], "explain": 3}),
    "thresholds": ("GET", "/thresholds", None),
    "encode": ("POST", "/encode", {"records": [DEMO_RECORD, ANOMALOUS_RECORD]}),
    "interpolate": ("POST", "/interpolate", {"records": [DEMO_RECORD, ANOMALOUS_RECORD], "steps": 3}),
}
"""NAME → (method, path, JSON body): the requests whose answers the README shows."""


def rounded(value: Any, digits: int = 3) -> Any:
    """Floats to `digits` significant digits: decimals would turn a p-value of 0.995 into 1.0 and a
    target FPR of 0.001 into 0.0."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return value


def without_versions(text: str) -> str:
    """The text with model versions blanked: a version is the training time, new on every run, so
    `--check` compares everything else."""
    return re.sub(r'"version": "[^"]*"', '"version": ""', text)


def render(payload: Any) -> str:
    return json.dumps(rounded(payload), ensure_ascii=False) + "\n"


def rewrite(text: str, outputs: dict[str, str]) -> str:
    """README text with each marked block's content replaced by `outputs[NAME]`."""

    def replace(match: re.Match[str]) -> str:
        name, language = match.group(1), match.group(2)
        return f"<!-- readme-example: {name} -->\n```{language}\n{outputs[name]}```\n{CLOSE_MARKER}"

    return MARKER.sub(replace, text)


def marked_names(text: str) -> list[str]:
    """The NAMEs of well-formed marked blocks, in order (`check_structure` finds the broken ones)."""
    return [m.group(1) for m in MARKER.finditer(text)]


def check_structure(text: str) -> list[str]:
    """Problems with the markers: an open marker without its block and close, an unknown NAME."""
    problems = []
    opened = OPEN_MARKER.findall(text)
    well_formed = marked_names(text)
    if opened != well_formed or text.count(CLOSE_MARKER) != len(opened):
        problems.append(f"markers {opened} but well-formed blocks {well_formed}")
    problems += [f"unknown example {name!r}" for name in opened if name not in EXAMPLES]
    return problems


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(base: str, method: str, path: str, body: dict[str, Any] | None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def run_examples(workdir: Path) -> dict[str, str]:
    """Train the demo model in `workdir`, serve it, run every example; NAME → rendered output."""
    cli = [sys.executable, "-m", "vae_anomaly.training.cli"]
    subprocess.run([*cli, "demo", "--dir", str(workdir), "--no-serve"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    env = {**os.environ, "VAE_ANOMALY_LOG_FORMAT": "json"}
    server = subprocess.Popen(
        [*cli, "serve", str(workdir / "models" / "demo"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if request(base, "GET", "/readyz", None)["status"] == "ready":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the demo server did not become ready")
            time.sleep(0.2)
        return {name: render(request(base, *spec)) for name, spec in EXAMPLES.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md would change; write nothing")
    args = parser.parse_args(argv)
    text = README.read_text()
    problems = check_structure(text)
    if problems:
        print("README markers: " + "; ".join(problems), file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as workdir:
        outputs = run_examples(Path(workdir))
    updated = rewrite(text, outputs)
    if args.check:
        current = without_versions(updated) == without_versions(text)
        print("README examples are current" if current else "README examples are out of date")
        return int(not current)
    README.write_text(updated)
    print(f"rewrote {len(marked_names(text))} example outputs in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
