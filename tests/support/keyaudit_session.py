"""The key audit (tests/support/keyaudit.py) beside the session's server, and its verdict."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import pkgutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bridge
import workers
from bridge import scripts
from tests.support.servers import wait_until


@dataclass
class Audit:
    findings: Path

    def check(self) -> None:
        """Fail the session if any script touched a key it was not given."""
        time.sleep(0.2)  # the last commands' lines reach the audit
        found = [json.loads(line) for line in self.findings.read_text().splitlines() if line]
        stray = [f for f in found if "undeclared" in f]
        mixed = [f for f in found if "tenants" in f]
        names = _script_names() if found else {}
        if stray:
            raise AssertionError("Lua scripts touched keys not passed in KEYS:\n" + "\n".join(
                f"  {names.get(f['script'], f['script'])}: {' '.join(f['command'])} "
                f"touched {f['undeclared']} (declared: {f['declared']})" for f in stray))
        if mixed:
            raise AssertionError("Lua scripts were given keys of two tenants:\n" + "\n".join(
                f"  {names.get(f['script'], f['script'])}: tenants {f['tenants']} "
                f"(declared: {f['declared']})" for f in mixed))


def _script_names() -> dict[str, str]:
    """Every script of the bridge by its SHA1, as EVALSHA names it."""
    for package in (bridge, workers):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):
                with contextlib.suppress(Exception):
                    importlib.import_module(module.name)
    return {hashlib.sha1(lua.source.encode()).hexdigest(): path
            for path, lua in scripts.LOADED.items()}


@contextlib.contextmanager
def audited(port: int) -> Iterator[Audit]:
    with tempfile.TemporaryDirectory(prefix="lb-keyaudit-") as folder:
        findings = Path(folder) / "findings.jsonl"
        findings.touch()
        process = subprocess.Popen([sys.executable, "-m", "tests.support.keyaudit", str(port),
                                    str(findings)], cwd=Path(__file__).resolve().parents[2])
        try:
            wait_until(lambda: Path(f"{findings}.ready").exists(), timeout=10,
                       what="the key audit to watch the server")
            yield Audit(findings)
        finally:
            process.terminate()
            process.wait(timeout=10)
