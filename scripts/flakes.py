"""Run the netns and behaviour tests N times and name every test that did not pass each time.

``make flakes`` (N=3) or ``make flakes N=5 ARGS=-x``.  Each round is one pytest run with a
JUnit XML report; a test is *flaky* when its outcomes differ between rounds and *failing*
when it never passed.  Exit status 1 when any test is either, so CI or a loop can use it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

# The tests that start daemons in network namespaces: timing lives there.
SELECT = ["-m", "netns or vtund", "tests", "plugins", "devices"]


def outcomes(report: Path) -> dict[str, str]:
    """Test id -> passed | failed | error | skipped, read from one JUnit XML report."""
    result: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "error" in kinds:
            result[name] = "error"
        elif "failure" in kinds:
            result[name] = "failed"
        elif "skipped" in kinds:
            result[name] = "skipped"
        else:
            result[name] = "passed"
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--rounds", type=int, default=3)
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k multi)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    seen: dict[str, list[str]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="vt-flakes-") as tmp:
        for r in range(1, args.rounds + 1):
            report = Path(tmp) / f"round{r}.xml"
            t0 = time.monotonic()
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", *SELECT, *args.pytest_args]
            rc = subprocess.run(cmd).returncode
            print(f"flakes: round {r}/{args.rounds}: pytest exit {rc} "
                  f"in {time.monotonic() - t0:.0f}s", flush=True)
            if not report.exists():
                print("flakes: pytest wrote no report (collection error?)", file=sys.stderr)
                return 1
            for name, outcome in outcomes(report).items():
                seen[name].append(outcome)

    flaky = {n: o for n, o in seen.items() if "passed" in o and set(o) - {"passed"}}
    failing = {n: o for n, o in seen.items() if "passed" not in o and set(o) != {"skipped"}}
    print(f"flakes: {len(seen)} tests, {args.rounds} rounds: "
          f"{len(flaky)} flaky, {len(failing)} failing every round")
    for label, group in (("FLAKY", flaky), ("FAILING", failing)):
        for name, o in sorted(group.items()):
            print(f"{label} {name}: {' '.join(o)}")
    return 1 if flaky or failing else 0


if __name__ == "__main__":
    sys.exit(main())
