"""The bad-input table of docs/reliability.md: run the corpus (tests/unit/badinput), count cases
per surface, and how many gave a clear error (passed) or not (failed: a crash, an unnamed
field or a partial output).

    PYTHONPATH=.:services/lib .venv/bin/python bench/bad_input_table.py [--json bench/results/bad_input.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

SURFACES = {
    "test_job_parameters": "job parameters (spec, CLI flags)",
    "test_footprint_files": "footprint files",
    "test_imagery": "imagery (bytes, arrays, scene assets)",
    "test_bus_payloads": "Kafka payloads (tile and building workers)",
    "test_grpc_requests": "gRPC requests (intensity) and source URIs",
    "test_object_keys": "object keys and URIs",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "corpus.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/badinput",
                        f"--junitxml={xml}"], check=False, capture_output=True)
        root = ET.parse(xml).getroot()
    cases, failed = Counter(), Counter()
    for case in root.iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        cases[module] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed[module] += 1
    rows = [{"surface": SURFACES.get(m, m), "module": m, "cases": n, "clear_errors": n - failed[m],
             "failures": failed[m]} for m, n in sorted(cases.items())]
    print("| surface | cases | clear error, service up, nothing partial | failures |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['surface']} | {r['cases']} | {r['clear_errors']} | {r['failures']} |")
    total, bad = sum(cases.values()), sum(failed.values())
    print(f"| **all** | **{total}** | **{total - bad}** | **{bad}** |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "total": total, "failures": bad}, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
