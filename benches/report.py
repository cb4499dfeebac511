"""Turn a pytest-benchmark JSON file into the markdown table of benches/README.md.

Within each benchmark group, every "ours" entry is compared with every peer entry
of the same group (same work per round): the ratio is ours/peer of the median
time, so < 1 means we are faster. An entry is "ours" when its name says so
(`ours` in the name or parameters) or it calls our API directly (`*_event`,
`*_audio_chunk`); every other entry in the group is a peer.

    python benches/report.py .benchmarks/latest.json
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

OURS = re.compile(r"ours|_event\b|_event\[|encode_audio_chunk|via_api|through_server")


def _fmt(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _label(bench: dict) -> str:
    name = bench["name"].removeprefix("test_")
    return name


def rows(data: dict) -> list[tuple[str, str, str, str, str, str]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or bench["fullname"]].append(bench)
    out = []
    for group in sorted(groups):
        entries = groups[group]
        ours = [b for b in entries if OURS.search(b["name"])]
        peers = [b for b in entries if b not in ours]
        for o in ours:
            for p in peers or [None]:
                om = o["stats"]["median"]
                if p is None:
                    out.append((group, _label(o), _fmt(om), "-", "-", "-"))
                    continue
                pm = p["stats"]["median"]
                out.append((group, _label(o), _fmt(om), _label(p), _fmt(pm), f"{om / pm:.2f}"))
    return out


def main(path: str) -> int:
    with open(path) as f:
        data = json.load(f)
    machine = data.get("machine_info", {})
    print(
        f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"{machine.get('cpu', {}).get('count', '?')} cores; "
        f"Python {machine.get('python_version', '?')}; {data.get('datetime', '')}\n"
    )
    print("| group | ours | median | peer | median | ours/peer |")
    print("|---|---|---|---|---|---|")
    for row in rows(data):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".benchmarks/latest.json"))
