"""Record the code fingerprint of every unit kind, refusing one whose code changed at the same
version (see :mod:`advtransfer.units`)::

    python tools/unit_versions.py                                # list kinds: ok / changed
    python tools/unit_versions.py --write                        # record after version bumps
    python tools/unit_versions.py --write --same-results KIND    # a change that keeps results

The record is ``tests/unit_fingerprints.json`` (``{kind: {"version": v, "fingerprint": f}}``),
which ``tests/test_unit_versions.py`` compares with the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from advtransfer.units import KINDS, PACKAGE_KINDS, fingerprint

RECORD = Path(__file__).resolve().parents[1] / "tests" / "unit_fingerprints.json"


def current() -> dict[str, dict[str, object]]:
    """The version and fingerprint of every declared kind, by name."""
    return {name: {"version": KINDS[name].version, "fingerprint": fingerprint(name)}
            for name in sorted(PACKAGE_KINDS)}


def stale(recorded: dict, now: dict) -> dict[str, str]:
    """Kinds whose record differs from the code, with why: ``"bump"`` (code changed at the
    recorded version), ``"record"`` (a new version or a new kind not yet recorded) or
    ``"removed"`` (recorded, no longer declared)."""
    out: dict[str, str] = {}
    for name, entry in now.items():
        old = recorded.get(name)
        if old == entry:
            continue
        if old is not None and old["version"] == entry["version"]:
            out[name] = "bump"
        else:
            out[name] = "record"
    out.update({name: "removed" for name in recorded if name not in now})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="record the current fingerprints")
    parser.add_argument("--same-results", action="append", default=[], metavar="KIND",
                        help="a kind whose code changed without changing any result")
    args = parser.parse_args(argv)
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    now = current()
    problems = stale(recorded, now)
    unknown = sorted(set(args.same_results) - set(now))
    if unknown:
        print(f"--same-results: unknown kind(s) {unknown}", file=sys.stderr)
        return 2
    refused = [k for k, why in problems.items() if why == "bump" and k not in args.same_results]
    for name, why in sorted(problems.items()):
        print(f"{name}: {why}")
    if not args.write:
        return 1 if problems else 0
    if refused:
        print(f"refused: the code of {', '.join(refused)} changed at the same version; bump "
              "its version in src/advtransfer/units.py, or pass --same-results KIND for a "
              "change that cannot change any stored result", file=sys.stderr)
        return 1
    RECORD.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(now)} kinds in {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
