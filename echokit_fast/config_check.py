"""The one check of a config: what ``echokit-fast check-config`` prints and what the console's
config editor shows (``/console/api/config/check``, echokit_fast/devices/web/config.py).

A config passes when :func:`~echokit_fast.config.parse_config` accepts it (every problem it
finds is an error with its line and dotted key) and the server can run every platform it
names (:func:`~echokit_fast.backends.registry.unsupported`, what ``serve`` refuses at
start-up: those errors are located at the section's ``platform`` key). Its warnings (unknown
keys, unused sections ...) and notes (normalisations) come along; they never fail it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echokit_fast.backends import registry
from echokit_fast.config import (
    ConfigError,
    ConfigIssue,
    LoadedConfig,
    key_line,
    load_config,
    parse_config,
)

__all__ = ["Check", "check_file", "check_text"]


@dataclass
class Check:
    """The outcome of a check (``loaded``: None when the config does not parse)."""

    filename: str
    loaded: LoadedConfig | None = None
    #: what the loader refuses
    errors: list[ConfigIssue] = field(default_factory=list)
    #: what ``serve`` would refuse in a config that parses (platforms it cannot run)
    unservable: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    notes: list[ConfigIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.loaded is not None and not self.unservable

    def as_json(self) -> dict[str, Any]:
        """``{"ok", "errors", "warnings", "notes"}``, each issue ``{"line", "key",
        "message"}`` (``line``/``key`` null where the problem has none)."""

        def one(issue: ConfigIssue) -> dict[str, Any]:
            return {"line": issue.line, "key": issue.path or None, "message": issue.message}

        return {
            "ok": self.ok,
            "errors": [one(i) for i in [*self.errors, *self.unservable]],
            "warnings": [one(i) for i in self.warnings],
            "notes": [one(i) for i in self.notes],
        }


def _finish(check: Check, loaded: LoadedConfig, text: str | None) -> Check:
    check.loaded = loaded
    check.warnings, check.notes = loaded.warnings, loaded.notes
    for kind, problem in registry.unsupported_sections(loaded.config):
        path = (kind, "platform") if kind else ()
        line = key_line(text, path) if text is not None and kind else None
        key = f"{kind}.platform" if kind else ""
        check.unservable.append(ConfigIssue(check.filename, line, key, problem))
    return check


def check_text(
    text: str,
    *,
    filename: str = "config.toml",
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Check:
    """Check the TOML ``text`` of a config file (nothing is logged)."""
    check = Check(filename)
    try:
        loaded = parse_config(text, filename=filename, env=env, base_dir=base_dir, log_issues=False)
    except ConfigError as exc:
        check.errors = list(exc.issues)
        return check
    return _finish(check, loaded, text)


def check_file(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Check:
    """Check the config file at ``path``, read as ``serve`` reads it."""
    check = Check(str(path))
    try:
        loaded = load_config(path, env=env, log_issues=False)
    except ConfigError as exc:
        check.errors = list(exc.issues)
        return check
    try:
        text: str | None = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # gone since: the problems keep no line
        text = None
    return _finish(check, loaded, text)
