"""The layers stay apart: the conversation engine and turn detection know no device protocol
and no server; the backends know none of the layers above them (docs/architecture.md).

An ``ast`` scan of every module's imports (module level and inside functions alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "echokit_fast"

#: package folder -> the echokit_fast subpackages its modules may not import
FORBIDDEN = {
    "conversation": ("devices", "server"),
    "turn": ("devices", "server", "conversation"),
    "backends": ("conversation", "devices", "server", "turn"),
}

#: known exceptions: (module, imported prefix)
KNOWN: set[tuple[str, str]] = set()


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import (use echokit_fast.…)")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer):
    bad = []
    files = sorted((PKG / layer).rglob("*.py"))
    assert files, f"no modules in echokit_fast/{layer}"
    for path in files:
        for name in imports(path):
            for other in FORBIDDEN[layer]:
                if name == f"echokit_fast.{other}" or name.startswith(f"echokit_fast.{other}."):
                    rel = path.relative_to(PKG).as_posix()
                    if any(rel == m and name.startswith(p) for m, p in KNOWN):
                        continue
                    bad.append(f"{path.relative_to(PKG)} imports {name}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_the_scan_sees_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import echokit_fast.devices\ndef g():\n    from echokit_fast.server import app\n")
    assert "echokit_fast.devices" in imports(f) and "echokit_fast.server.app" in imports(f)
