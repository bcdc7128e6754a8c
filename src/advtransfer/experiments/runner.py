"""Running a recipe: resolve its configuration, open the store, run, write results and report.

``results.json`` holds the resolved configuration, advtransfer/torch/python versions, seed,
device, wall time, how many units were computed or reused and the seconds spent computing
them in this process and in the executor's workers (``unit_seconds``), one record per source
model and the correlations; ``report.md``/``report.html``/``results.csv`` and the figures sit
beside it.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import advtransfer
from advtransfer.devices import resolve_device
from advtransfer.errors import AdvTransferError
from advtransfer.executors import Executor, LocalExecutor, close, connect, get_executor
from advtransfer.experiments.config import apply, parse_override, read_toml, to_dict
from advtransfer.experiments.registry import Recipe, RunContext, get_recipe
from advtransfer.fileio import CorruptFileError, read_json, to_jsonable, write_json
from advtransfer.progress import heartbeat, warn
from advtransfer.store import Store, code_fingerprint


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


@dataclass(frozen=True)
class Plan:
    """A run checked before anything is written: recipe, resolved configuration, device, and
    the store of the run directory (nothing created yet)."""

    recipe: Recipe
    config: Any
    device: torch.device
    out: Path
    store: Store
    executor: Executor = dataclasses.field(default_factory=LocalExecutor)


def environment(device: torch.device) -> dict[str, Any]:
    """Where a run computes: advtransfer's and torch's versions, the device type and torch's
    thread count (recorded in ``run.json``; a resume elsewhere is said)."""
    import advtransfer

    return {"advtransfer": advtransfer.__version__, "torch": torch.__version__,
            "device": device.type, "threads": torch.get_num_threads()}


def plan(recipe_or_path: str, out: str | Path, *, overrides: list[str] | tuple[str, ...] = (),
         device: str = "auto", seed: int | None = None, quick: bool = False,
         executor: str = "local", address: str | None = None, num_cpus: float | None = None,
         num_gpus: float | None = None, allow_environment_change: bool = False) -> Plan:
    """Check everything that can be checked before the run: the recipe and its configuration
    (types, then the recipe's own ``check`` of the values), the device, and ``out``
    (creatable; new, empty, or a run of the same configuration), and the executor
    (``"local"`` or ``"ray"``, with ``address`` the Ray cluster and ``num_cpus``/``num_gpus``
    the resources per task; Ray must be installed). A directory started in another
    environment (:func:`environment`) is refused unless ``allow_environment_change``
    (:meth:`Store.check_run`). Raises :class:`AdvTransferError`; writes nothing."""
    recipe, config = resolve(recipe_or_path, overrides, seed=seed, quick=quick)
    if recipe.check is not None:
        recipe.check(config)
    run_on = resolve_device(device=device)
    runner = get_executor(executor, address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    out = Path(out)
    store = Store(out)
    store.check_run({"recipe": recipe.name, "config": to_dict(config)},
                    growable=recipe.growable, environment=environment(run_on),
                    allow_environment_change=allow_environment_change)
    return Plan(recipe, config, run_on, out, store, runner)


def execute(p: Plan, *, progress: bool = True) -> dict[str, Any]:
    """Run a :func:`plan` (resuming what is already in its directory), write the results and
    the report, and return the results. The recipe checks its own values and data before its
    first unit, and the run directory is created with that first unit, so a run refused there
    leaves nothing behind. The directory's lock (:meth:`Store.lock`) is held throughout and
    released on return, on an error and on Ctrl-C: a second process on the same directory is
    refused with an :class:`AdvTransferError` naming the holder, and writes nothing. A Ray
    that the executor started is shut down when the run ends, however it ends
    (:func:`advtransfer.executors.close`)."""
    try:
        with p.store.lock():
            return _execute(p, progress=progress)
    finally:
        close(p.executor)


def _execute(p: Plan, *, progress: bool) -> dict[str, Any]:
    previous = _finished(p.out)
    if (previous is not None and previous.get("config") == json.loads(json.dumps(
            to_jsonable(to_dict(p.config)))) and previous.get("code") == code_fingerprint()
            and previous.get("unit_files")
            and all((p.out / f).exists() for f in previous["unit_files"])):
        # a finished run with every unit in place: nothing to recompute or rewrite
        return {**previous, "units": {"computed": 0, "reused": len(previous["unit_files"])}}
    ctx = RunContext(store=p.store, device=p.device, progress=progress, executor=p.executor)
    connect(p.executor)  # an unreachable cluster is an error before any work
    start = time.perf_counter()
    with heartbeat(lambda: f"{p.recipe.name}: {p.store.misses} units computed, "
                           f"{p.store.hits} reused", enabled=progress):
        body = p.recipe.run(p.config, ctx)
    results = {
        "recipe": p.recipe.name,
        "config": to_dict(p.config),
        "versions": {"advtransfer": advtransfer.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "seed": getattr(p.config, "seed", None),
        "device": str(p.device),
        "executor": p.executor.name,
        "wall_time_s": time.perf_counter() - start,
        "units": {"computed": p.store.misses, "reused": p.store.hits},
        # where the units were computed: this process vs the executor's workers (seconds)
        "unit_seconds": {"in_process": p.store.compute_seconds,
                         "in_workers": float(getattr(p.executor, "worker_seconds", 0.0))},
        "unit_files": sorted(set(p.store.touched)),
        "code": code_fingerprint(),
        **body,
    }
    p.store.prepare()
    write_json(p.out / "results.json", results)
    return _write_report(p.out)


def run(recipe_or_path: str, out: str | Path, *, overrides: list[str] | tuple[str, ...] = (),
        device: str = "auto", seed: int | None = None, quick: bool = False,
        progress: bool = True, executor: str = "local",
        address: str | None = None, num_cpus: float | None = None,
        num_gpus: float | None = None, allow_environment_change: bool = False) -> dict[str, Any]:
    """Run a recipe into ``out`` (resuming what is already there) and return its results:
    :func:`plan` then :func:`execute`. ``executor="ray"`` runs the recipe's independent units
    (the model-selection recipes' candidates) as Ray tasks (``address``: the cluster;
    ``num_cpus``/``num_gpus``: the resources per task)."""
    return execute(plan(recipe_or_path, out, overrides=overrides, device=device, seed=seed,
                        quick=quick, executor=executor, address=address, num_cpus=num_cpus,
                        num_gpus=num_gpus, allow_environment_change=allow_environment_change),
                   progress=progress)


def _finished(out: Path) -> dict[str, Any] | None:
    """The results of a finished run in ``out`` (results.json with correlations and a report);
    None when there is none, or when results.json is corrupt (said on stderr: it is rewritten
    from the stored units)."""
    path = out / "results.json"
    if not (path.exists() and (out / "report.md").exists() and (out / "report.html").exists()):
        return None
    try:
        results = read_json(path)
    except CorruptFileError as exc:
        warn(f"{exc}; rewriting it from the stored units")
        return None
    return results if isinstance(results, dict) and "correlations" in results else None


def report(directory: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """(Re)write the report of the finished run in ``directory`` from its ``results.json``;
    return the results with their correlations. Without ``out`` the report is rewritten in
    place, holding the run directory's lock meanwhile, so it never writes while a run on that
    directory does (:meth:`advtransfer.store.Store.lock`). With ``out`` (another directory)
    ``directory`` is only read, so a run in a read-only place (a colleague's, an archive) can
    be reported: ``out`` receives ``results.json`` (with the correlations) and the report."""
    directory = Path(directory)
    if not (directory / "results.json").exists():
        raise AdvTransferError(f"{directory} has no results.json; run a recipe with --out "
                               f"{directory} first")
    if out is None or Path(out).resolve() == directory.resolve():
        with Store(directory).lock():
            return _write_report(directory)
    from advtransfer.fileio import check_creatable
    from advtransfer.report import write_report

    out = Path(out)
    check_creatable(out, "--out")
    if out.exists() and not out.is_dir():
        raise AdvTransferError(f"--out {out} is not a directory (a file)")
    results = _read_results(directory)
    results["correlations"] = write_report(results, out)
    write_json(out / "results.json", results)
    return results


def _read_results(directory: Path) -> dict[str, Any]:
    """``directory``'s results.json, or an error saying how to rewrite a corrupt one."""
    try:
        return read_json(directory / "results.json")
    except CorruptFileError as exc:
        raise AdvTransferError(f"{exc}. Rerun the command that made this run (advtransfer run "
                               f"RECIPE --out {directory} with the same options): it rewrites "
                               "results.json from the stored units without recomputing "
                               "them.") from None


def _write_report(out: Path) -> dict[str, Any]:
    """:func:`report` in place, for a caller that holds the run lock."""
    from advtransfer.report import write_report

    if not (out / "results.json").exists():
        raise AdvTransferError(f"{out} has no results.json; run a recipe with --out {out} first")
    results = _read_results(out)
    results["correlations"] = write_report(results, out)
    write_json(out / "results.json", results)
    return results
