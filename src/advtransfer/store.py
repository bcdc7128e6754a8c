"""The results store: every finished unit of work, written atomically and keyed by its config.

A unit (a trained model, a fine-tune result, a pair measurement) is identified by its *kind*
and the canonical JSON of its configuration, which includes the keys of the units it depends on.
Its key is ``<kind>-<sha256(config)[:16]>``; records are JSON files under ``records/`` and models
safetensors files under ``models/``, each written to a temporary file and renamed into place.
A rerun finds finished units and recomputes nothing; a run killed at any moment leaves only
complete files, so the rerun finishes with the same numbers; a changed configuration changes
the key, so stale results are never reused. Nothing is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from advtransfer.errors import AdvTransferError
from advtransfer.fileio import to_jsonable, write_json


def canonical(config: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace) of a configuration."""
    return json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))


def unit_key(kind: str, config: Any) -> str:
    """``kind-<16 hex digits>``: the identity of a unit of work."""
    digest = hashlib.sha256(f"{kind}:{canonical(config)}".encode()).hexdigest()[:16]
    return f"{kind}-{digest}"


class Store:
    """Finished units under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            (self.root / "records").mkdir(parents=True, exist_ok=True)
            (self.root / "models").mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise AdvTransferError(f"--out {self.root} is not a writable directory: "
                                   f"{exc.strerror or exc}") from None
        self.hits = 0
        self.misses = 0
        self.touched: list[str] = []  # unit files used by this run, relative to root

    def record_path(self, kind: str, config: Any) -> Path:
        return self.root / "records" / f"{unit_key(kind, config)}.json"

    def model_path(self, kind: str, config: Any) -> Path:
        return self.root / "models" / f"{unit_key(kind, config)}.safetensors"

    def record(self, kind: str, config: Any, compute: Callable[[], dict]) -> dict:
        """The stored result of a unit, computing and storing it first if it is not there."""
        path = self.record_path(kind, config)
        self.touched.append(str(path.relative_to(self.root)))
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("config") == json.loads(canonical(config)):
                self.hits += 1
                return stored["result"]
        self.misses += 1
        result = compute()
        write_json(path, {"kind": kind, "config": config, "result": result})
        return json.loads(json.dumps(to_jsonable(result)))

    def model(self, kind: str, config: Any, build: Callable[[], nn.Module],
              train: Callable[[nn.Module], nn.Module]) -> nn.Module:
        """A trained model: loaded from the store when there, else built, trained and saved.
        ``build`` must return the untrained architecture (the weights are loaded into it)."""
        from advtransfer.models.checkpoint import load_into, save_model

        path = self.model_path(kind, config)
        self.touched.append(str(path.relative_to(self.root)))
        model = build()
        if path.exists():
            self.hits += 1
            return load_into(model, path).eval()
        self.misses += 1
        model = train(model)
        save_model(model, path, metadata={"kind": kind, "config": canonical(config)})
        return model.eval()

    def check_run(self, identity: dict) -> None:
        """Record which recipe and configuration own this directory; refuse another one.

        Raises :class:`AdvTransferError` naming the differing keys when the directory was
        written by a different configuration (nothing is deleted or overwritten)."""
        path = self.root / "run.json"
        if path.exists():
            old = json.loads(path.read_text())
            new = json.loads(canonical(identity))
            if old != new:
                diffs = _differences(old, new)
                raise AdvTransferError(
                    f"{self.root} holds a run of a different configuration (differs in "
                    f"{', '.join(diffs[:8])}); choose another --out, or rerun with the same "
                    "configuration to resume. Nothing was changed."
                )
            return
        write_json(path, json.loads(canonical(identity)))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out.extend(_differences(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or 'value'} ({old!r} -> {new!r})"]
