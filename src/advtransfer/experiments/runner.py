"""Running a recipe: resolve its configuration, open the store, run, write results and report.

``results.json`` holds the resolved configuration, advtransfer/torch/python versions, seed,
device, wall time, how many units were computed or reused, one record per source model and the
correlations; ``report.md``/``report.html``/``results.csv`` and the figures sit beside it.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

import advtransfer
from advtransfer.errors import AdvTransferError
from advtransfer.experiments.config import apply, parse_override, read_toml, to_dict
from advtransfer.experiments.registry import Recipe, RunContext, get_recipe
from advtransfer.fileio import to_jsonable, write_json
from advtransfer.store import Store


def resolve(recipe_or_path: str, overrides: list[str] | tuple[str, ...] = (), *,
            seed: int | None = None, quick: bool = False) -> tuple[Recipe, Any]:
    """The recipe and its configuration from a name or a TOML file, then ``--quick``, then the
    ``key=value`` overrides, then ``--seed``."""
    path = Path(recipe_or_path)
    values: dict[str, Any] = {}
    if path.suffix == ".toml":
        values = read_toml(path)
        name = values.pop("recipe", None)
        if not isinstance(name, str):
            raise AdvTransferError(f"{path} must name its recipe: add a line recipe = \"NAME\"")
        source = str(path)
    else:
        name, source = recipe_or_path, "configuration"
    recipe = get_recipe(name)
    config = recipe.config()
    if quick:
        if recipe.quick is None:
            raise AdvTransferError(f"recipe {name!r} has no --quick setting")
        config = recipe.quick(config)
    config = apply(config, values, source=source)
    parsed = dict(parse_override(o) for o in overrides)
    config = apply(config, parsed, source="--set")
    if seed is not None:
        config = apply(config, {"seed": seed}, source="--seed")
    return recipe, config


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; or an explicit cpu / cuda / cuda:N."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise AdvTransferError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AdvTransferError(f"--device {device} was asked for but no CUDA device is available")
    return torch.device(device)


def run(recipe_or_path: str, out: str | Path, *, overrides: list[str] | tuple[str, ...] = (),
        device: str = "auto", seed: int | None = None, quick: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run a recipe into ``out`` (resuming what is already there) and return its results."""
    recipe, config = resolve(recipe_or_path, overrides, seed=seed, quick=quick)
    run_on = resolve_device(device)
    out = Path(out)
    store = Store(out)
    store.check_run({"recipe": recipe.name, "config": to_dict(config)})
    previous = _finished(out)
    if (previous is not None and previous.get("config") == json.loads(json.dumps(
            to_jsonable(to_dict(config)))) and previous.get("unit_files")
            and all((out / f).exists() for f in previous["unit_files"])):
        # a finished run with every unit in place: nothing to recompute or rewrite
        return {**previous, "units": {"computed": 0, "reused": len(previous["unit_files"])}}
    ctx = RunContext(store=store, device=run_on, progress=progress)
    start = time.perf_counter()
    body = recipe.run(config, ctx)
    results = {
        "recipe": recipe.name,
        "config": to_dict(config),
        "versions": {"advtransfer": advtransfer.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "seed": getattr(config, "seed", None),
        "device": str(run_on),
        "wall_time_s": time.perf_counter() - start,
        "units": {"computed": store.misses, "reused": store.hits},
        "unit_files": sorted(set(store.touched)),
        **body,
    }
    write_json(out / "results.json", results)
    return report(out)


def _finished(out: Path) -> dict[str, Any] | None:
    """The results of a finished run in ``out`` (results.json with correlations and a report)."""
    path = out / "results.json"
    if not (path.exists() and (out / "report.md").exists() and (out / "report.html").exists()):
        return None
    results = json.loads(path.read_text())
    return results if "correlations" in results else None


def report(out: str | Path) -> dict[str, Any]:
    """(Re)write the report of a finished run from its ``results.json``; return the results
    with their correlations."""
    from advtransfer.report import write_report

    out = Path(out)
    path = out / "results.json"
    if not path.exists():
        raise AdvTransferError(f"{out} has no results.json; run a recipe with --out {out} first")
    results = json.loads(path.read_text())
    results["correlations"] = write_report(results, out)
    write_json(path, results)
    return results
