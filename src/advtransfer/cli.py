"""The ``advtransfer`` command line (typer).

Exit codes: 0 success; 2 usage errors (a bad option value, an unknown recipe, an unknown or
ambiguous model name, a bad ``--set``, an ``--out`` that cannot be used), reported before
anything is loaded or written; 1 runtime errors (missing or unreadable files, a failing model or
recipe); 130 interrupted (Ctrl-C).

Models are specs of :func:`advtransfer.models.create` (``builtin:``, ``cifar:``, ``tv:``,
``timm:``, ``package.module:factory``), the same as in Python.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import torch
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

import advtransfer
from advtransfer.attacks import AttackConfig
from advtransfer.devices import resolve_device, use_threads, user_threads
from advtransfer.errors import AdvTransferError
from advtransfer.methods import (
    BASE_FEATURE_METHODS,
    DEFAULT_METHODS,
    GRADIENT_METHODS,
    OUTPUT_METHODS,
    POOL_METHODS,
    RANK_AVERAGE_METHODS,
)
from advtransfer.metrics import check_convention
from advtransfer.progress import heartbeat, one_line_warnings, warn
from advtransfer.store import LOCK_FILE, LOCK_TIMEOUT_S

# Plain help: typer's rich help ignores metavars (every flag shows <bool>, choices <str>) and
# parses [..] in help texts as markup.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"max_content_width": 120},
                  help="Adversarial transferability as a predictor of knowledge "
                       "transferability (Liang et al., ICML 2021).")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"advtransfer {advtransfer.__version__} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """advtransfer: which pretrained model will transfer best to my task?"""
    # every warning of the command, of any category, as one line "warning: ..." on stderr,
    # until the command ends (the context closes)
    ctx.with_resource(one_line_warnings())


def parse_bounds(text: str) -> tuple[float, float] | None:
    """'0,1' -> (0.0, 1.0); 'none' -> None."""
    if text.strip().lower() in ("none", "off", ""):
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise AdvTransferError(f"--bounds must be 'LOW,HIGH' (e.g. '0,1') or 'none'; "
                               f"got {text!r}") from None
    return lo, hi


def load_cli_model(spec: str, weights: Path | None, *, num_classes: int | None = None,
                   download: bool = False, seed: int, quiet: bool) -> nn.Module:
    """:func:`advtransfer.models.create` with a command's options (``--...-weights FILE|random``,
    ``--num-classes``, ``--download``, ``--seed``, ``--quiet``)."""
    from advtransfer.models.registry import create

    return create(spec, weights, num_classes, download=download, seed=seed, progress=not quiet)


def _check_specs(specs: list[str]) -> None:
    """A usage check: every model spec names a namespace (or is unambiguous) before loading."""
    from advtransfer.models.registry import resolve_spec

    for spec in specs:
        resolve_spec(spec)


def check_n_samples(n_samples: int, *, labelled: bool, option: str = "--n-samples") -> None:
    """A usage check of --n-samples (>= 2 labelled samples, >= 1 otherwise)."""
    minimum = 2 if labelled else 1
    if n_samples < minimum:
        raise AdvTransferError(f"{option} must be >= {minimum}; got {n_samples}")


def _data_tensors(spec: str, n_samples: int, *, labelled: bool) -> tuple[torch.Tensor, ...]:
    """(x,) or (x, y) from 'digits' (the bundled test split) or a .safetensors file with
    tensors 'x' (inputs, batch first) and, when labelled, 'y' (integer class labels); the first
    ``n_samples`` (a warning says so when the data has fewer)."""
    check_n_samples(n_samples, labelled=labelled)
    keys = ("x", "y") if labelled else ("x",)
    wanted = "tensors 'x' and 'y'" if labelled else "a tensor 'x'"
    if spec == "digits":
        from advtransfer.data.digits import digits

        split = digits(seed=0)
        tensors = {"x": split.x_test, "y": split.y_test}
    else:
        path = Path(spec)
        if path.suffix != ".safetensors" or not path.is_file():
            raise AdvTransferError(f"--data must be 'digits' or an existing .safetensors file "
                                   f"with {wanted}; got {spec!r}")
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if any(k not in tensors for k in keys):
            raise AdvTransferError(f"--data {spec}: the file has tensors {sorted(tensors)}; "
                                   f"expected {wanted}")
        if labelled and tensors["y"].is_floating_point():
            raise AdvTransferError(f"--data {spec}: 'y' must hold integer class labels; got "
                                   f"{tensors['y'].dtype}")
    available = len(tensors["x"])
    if n_samples > available:
        warn(f"--n-samples {n_samples} is more than --data {spec} holds: using all {available} "
             "samples")
    return tuple(tensors[k][:n_samples] for k in keys)


def load_cli_data(spec: str, n_samples: int) -> torch.Tensor:
    """The inputs x of --data ('digits' or a .safetensors file holding a tensor 'x')."""
    return _data_tensors(spec, n_samples, labelled=False)[0]


def _pair_tables(result: Any, title: str) -> tuple[Table, Table]:
    """measure's two tables, each within 80 columns: the metrics per direction, and the attack
    (mean perturbation norm, the victim's output deviation under it and under random noise)."""
    metrics = Table(title=title)
    attack = Table(title="the attacks (mean over samples)")
    for table, cols in ((metrics, ("dir", "alpha1", "a1 median", "alpha2", "combined", "a1>1")),
                        (attack, ("dir", "|delta|", "dev", "rand dev"))):
        for col in cols:
            table.add_column(col, justify="left" if col == "dir" else "right", no_wrap=True)
    for label, r in (("S->T", result.source_to_target), ("T->S", result.target_to_source)):
        metrics.add_row(label, f"{r.alpha1:.4f}", f"{r.alpha1_median:.4f}", f"{r.alpha2:.4f}",
                        f"{r.combined:.4f}", f"{r.n_alpha1_above_one}/{r.n_samples}")
        attack.add_row(label, f"{r.stats.mean_delta_norm:.4g}", f"{r.stats.mean_deviation:.4g}",
                       f"{r.stats.mean_random_deviation:.4g}")
    return metrics, attack


def _convergence_line(result: Any) -> str:
    """How converged the attack on each model was (its own direction's statistics)."""
    parts = []
    for name, r in (("source", result.source_to_target), ("target", result.target_to_source)):
        st = r.stats
        if math.isnan(st.fraction_converged):  # ce: a fixed number of steps
            parts.append(f"{name} {st.mean_iterations:.3g} steps")
        else:
            parts.append(f"{name} {st.mean_iterations:.3g} iterations on average, "
                         f"{100 * st.fraction_converged:.0f}% of samples met --tol")
    return "attack convergence: " + "; ".join(parts) + "."


def _fail(exc: AdvTransferError, code: int = 1) -> NoReturn:
    """Print ``error: ...`` on stderr and exit with ``code`` (1: runtime error, 2: usage)."""
    # soft_wrap: the message is never hard-wrapped at the terminal width (paths stay whole)
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(code=code)


def _usage(exc: AdvTransferError) -> NoReturn:
    """A bad option value, found before anything is loaded or written: exit 2."""
    _fail(exc, code=2)


def _interrupted(resume: str | None = None) -> NoReturn:
    """Ctrl-C: say what is kept and exit 130 (128 + SIGINT, the shell convention)."""
    err_console.print("interrupted." + (f" {resume}" if resume else ""), soft_wrap=True)
    raise typer.Exit(code=130)


def _check_out_file(out: Path | None) -> None:
    if out is not None:
        from advtransfer.fileio import check_creatable

        check_creatable(out, "--out")


def _unique_names(items: list[str], option: str) -> list[str]:
    """Display names of SPEC[=WEIGHTS] items: SPEC when it is unique, else SPEC=WEIGHTS; the
    same item given twice is refused (it would be measured against itself)."""
    twice = sorted({item for item in items if items.count(item) > 1})
    if twice:
        raise AdvTransferError(f"{option} {twice[0]} is given more than once; give each model "
                               "once")
    specs = [item.partition("=")[0] for item in items]
    return [spec if specs.count(spec) == 1 else item for spec, item in zip(specs, items,
                                                                            strict=True)]


Eps = Annotated[float, typer.Option(metavar="FLOAT",
                                     help="Attack budget ||delta||_p <= eps, in input space.")]
NormOpt = Annotated[Literal["l2", "linf"], typer.Option(metavar="[l2|linf]",
                                                        help="Attack norm.")]
ObjectiveOpt = Annotated[Literal["deviation", "ce"], typer.Option(
    metavar="[deviation|ce]", help="deviation: ||f(x+d)-f(x)||^2; ce: cross-entropy against "
                                   "the model's own clean prediction.")]
SolverOpt = Annotated[Literal["pgd", "first_order"], typer.Option(
    metavar="[pgd|first_order]", help="PGD, or the first-order (Jacobian top singular "
                                      "vector) solution.")]
StepsOpt = Annotated[int | None, typer.Option(
    metavar="INT", help="Cap on PGD steps (1 = FGSM) or power iterations; default 100 for the "
                        "deviation objective (each sample stops when its objective changes by "
                        "<= --tol), 10 for ce.")]
TolOpt = Annotated[float, typer.Option(
    metavar="FLOAT", help="Relative change of the deviation objective that stops a sample's "
                          "iterations.")]
ConventionOpt = Annotated[Literal["icml", "authors"], typer.Option(
    metavar="[icml|authors]",
    help="icml: alpha2 and combined unsquared (the paper's definitions); authors: squared, as "
         "the authors' image code reports them. alpha1 is the unsquared mean ratio in both.")]
BoundsOpt = Annotated[str, typer.Option(metavar="LOW,HIGH|none",
                                        help="Input domain, e.g. '0,1', or 'none'.")]
StepSizeOpt = Annotated[float | None, typer.Option(
    metavar="FLOAT", help="PGD step size. Default: eps when --steps 1; else 2*eps for the "
                          "deviation objective, 2.5*eps/steps for ce.")]
RandomStartOpt = Annotated[bool, typer.Option(help="PGD random start in the eps-ball.")]
IterateOpt = Annotated[Literal["best", "last"], typer.Option(
    metavar="[best|last]", help="PGD iterate returned: best (largest loss, the start included) "
                                "or last (the authors' code).")]

_ATTACK_DEFAULTS = {f.name: f.default for f in dataclasses.fields(AttackConfig)}
#: The attack options every attacking command takes: name, typer annotation (its help), default.
#: The names and defaults are AttackConfig's (the one attack schema; ``eps`` has the command
#: line's own default, ``bounds`` is written as text; ``mask_padding`` is for embedded text
#: inputs, which the commands do not read).
_ATTACK_OPTIONS: tuple[tuple[str, Any, Any], ...] = tuple(
    (name, annotation, {"eps": 1.0, "bounds": "0,1"}.get(name, _ATTACK_DEFAULTS.get(name)))
    for name, annotation in (
        ("eps", Eps), ("norm", NormOpt), ("objective", ObjectiveOpt), ("solver", SolverOpt),
        ("steps", StepsOpt), ("step_size", StepSizeOpt), ("random_start", RandomStartOpt),
        ("tol", TolOpt), ("iterate", IterateOpt), ("bounds", BoundsOpt)))


def _with_options(command: Callable[..., None], param: str,
                  options: Sequence[tuple[str, Any, Any]],
                  apply: Callable[[dict[str, Any]], Any]) -> Callable[..., None]:
    """``command`` with the command-line ``options`` (``(name, annotation, default)``) in place
    of its parameter ``param``, which receives ``apply({name: value})``; a command without
    such a parameter gets the options last, and ``apply`` runs (for its effect) before it."""
    hints = typing.get_type_hints(command, include_extras=True)  # resolved, typer's metadata
    params = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in inspect.signature(command).parameters.values()]
    names = [p.name for p in params]
    at = names.index(param) if param in names else len(params)
    params[at:at + 1] = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                           default=default, annotation=annotation)
                         for name, annotation, default in options]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        value = apply({name: kwargs.pop(name) for name, _, _ in options})
        command(**kwargs, **({param: value} if param in names else {}))

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must read the new signature, not the command's
    return wrapper


def _attack_config(values: dict[str, Any]) -> AttackConfig:
    try:
        return AttackConfig(**{**values, "bounds": parse_bounds(values["bounds"])})
    except AdvTransferError as exc:
        _usage(exc)


def attack_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the attack options (``--eps``, ``--norm``, ``--objective``,
    ``--solver``, ``--steps``, ``--step-size``, ``--[no-]random-start``, ``--tol``,
    ``--iterate``, ``--bounds``) in place of its parameter ``attack``, which receives them as
    one checked :class:`~advtransfer.attacks.AttackConfig` (a bad value is a usage error, exit
    2, before anything is loaded)."""
    return _with_options(command, "attack", _ATTACK_OPTIONS, _attack_config)


ThreadsOpt = Annotated[str, typer.Option(
    metavar="auto|INT", help="CPU threads for torch. auto: the cores not busy with other work "
    "(measured for 0.2 s at the start; all of them on an idle machine), or OMP_NUM_THREADS when "
    "set. Fewer than the cores avoids 10-40x slowdowns beside other jobs.")]


def _threads(values: dict[str, Any]) -> int:
    try:
        n = use_threads(values["threads"])
    except AdvTransferError as exc:
        _usage(exc)
    cores = os.cpu_count() or 1
    auto = str(values["threads"]).strip().lower() == "auto"
    if auto and n < cores and user_threads() is None:
        err_console.print(f"using {n} of {cores} CPU threads (auto): the other cores are busy "
                          "with other work; --threads sets the count")
    return n


def threads_option(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the option ``--threads`` (last, or in place of a parameter
    ``threads``, which then receives the count): the torch thread count is set
    (:func:`advtransfer.devices.use_threads`; a bad value is a usage error, exit 2) before the
    command runs."""
    return _with_options(command, "threads", [("threads", ThreadsOpt, "auto")], _threads)


DeviceOpt = Annotated[str, typer.Option(metavar="[auto|cpu|cuda|cuda:N]",
                                        help="auto: the GPU when present, else the CPU.")]
ExecutorOpt = Annotated[Literal["local", "ray"], typer.Option(
    metavar="[local|ray]", help="Where the per-candidate (per-source) units run: this process, "
    "or Ray tasks (pip install 'advtransfer[ray]'; the numbers are the same).")]
AddressOpt = Annotated[str | None, typer.Option(
    metavar="ADDR", help="Ray cluster to join with --executor ray (HOST:6379, auto, "
    "ray://HOST:10001); default: start a local Ray.")]
NumCpusOpt = Annotated[float | None, typer.Option(
    "--num-cpus", metavar="N", help="CPUs each Ray task declares and computes with (> 0, "
    "fractions such as 0.5 allowed; --executor ray only). Default: 1.")]
NumGpusOpt = Annotated[float | None, typer.Option(
    "--num-gpus", metavar="N", help="GPUs each Ray task declares (>= 0, fractions such as 0.25 "
    "allowed; --executor ray only). Default: 1 when this machine has CUDA, else 0.")]


def check_executor_options(executor: str, num_cpus: float | None,
                           num_gpus: float | None) -> None:
    """A usage check of --num-cpus/--num-gpus: values in range, and only with --executor ray
    (the local executor runs in this process)."""
    from advtransfer.executors import check_resources

    check_resources(num_cpus, num_gpus, names=("--num-cpus", "--num-gpus"))
    for option, value in (("--num-cpus", num_cpus), ("--num-gpus", num_gpus)):
        if value is not None and executor != "ray":
            raise AdvTransferError(f"{option} is for --executor ray (resources per Ray task); "
                                   f"the local executor runs in this process")
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
InputsOpt = Annotated[str, typer.Option(metavar="digits|FILE", help="'digits' or a "
                                        ".safetensors file with tensor 'x'.")]
SamplesOpt = Annotated[int, typer.Option(metavar="INT", help="Number of inputs to attack (at "
                                                             "most what --data holds).")]
SeedOpt = Annotated[int, typer.Option(metavar="INT", help="Seed for models and attacks.")]
_SPEC_HELP = ("builtin:NAME (digits-mlp, digits-cnn, digits-linear: trained now unless weights "
              "are given), cifar:NAME (an architecture; needs weights), tv:NAME (torchvision), "
              "timm:NAME, or package.module:factory (imported from the current directory "
              "first); unprefixed names work where unambiguous.")
DownloadOpt = Annotated[bool, typer.Option(
    "--download", help="Fetch torchvision's published weights for tv: models that have no "
                       "local weights (hash-checked, cached in $ADVTRANSFER_HOME/weights). "
                       "Off: nothing is downloaded.")]


def _num_classes_opt(what: str) -> Any:
    return Annotated[int | None, typer.Option(
        metavar="INT", min=1, help=f"Number of classes of {what}, passed to its builder "
                                   "(cifar:, tv:, timm:, module:factory; default: the "
                                   "builder's).")]


NumClassesOpt = _num_classes_opt("every model")
SourceClassesOpt = _num_classes_opt("--source")
TargetClassesOpt = _num_classes_opt("--target")


_SourceOpt = Annotated[str, typer.Option(metavar="SPEC[=WEIGHTS]", help=_SPEC_HELP + " "
                                         "SPEC=WEIGHTS gives weights, as in matrix and rank.")]
_TargetOpt = Annotated[str, typer.Option(metavar="SPEC[=WEIGHTS]", help="The target "
                                         "(reference) model; as --source.")]
_SourceWeightsOpt = Annotated[Path | None, typer.Option(
    metavar="FILE", help="Weights for --source (.safetensors, or .pt/.pth holding only "
                         "tensors), or 'random' for a seeded random initialisation.")]
_TargetWeightsOpt = Annotated[Path | None, typer.Option(metavar="FILE",
                                                        help="Weights for --target.")]
_AttackBatchOpt = Annotated[int, typer.Option(metavar="INT", help="Attack batch size.")]
_MeasureOutOpt = Annotated[Path | None, typer.Option(metavar="FILE.json",
                                                     help="Write the result as JSON here.")]


@app.command()
@attack_options
@threads_option
def measure(
    source: _SourceOpt = "digits-mlp",
    target: _TargetOpt = "digits-cnn",
    source_weights: _SourceWeightsOpt = None,
    target_weights: _TargetWeightsOpt = None,
    source_num_classes: SourceClassesOpt = None,
    target_num_classes: TargetClassesOpt = None,
    download: DownloadOpt = False,
    data: InputsOpt = "digits",
    n_samples: SamplesOpt = 256,
    attack: AttackConfig | None = None,
    convention: ConventionOpt = "icml",
    batch_size: _AttackBatchOpt = 128,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: _MeasureOutOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure alpha1, alpha2 and combined in both directions for one source/target pair."""
    try:
        run_on = str(resolve_device(device=device))
        assert attack is not None
        config = attack
        check_convention(convention)
        check_n_samples(n_samples, labelled=False)
        _check_out_file(out)
        (source, source_weights), (target, target_weights) = (
            _spec_and_weights(item, weights, option) for item, weights, option in
            ((source, source_weights, "--source"), (target, target_weights, "--target")))
        _check_specs([source, target])
    except AdvTransferError as exc:
        _usage(exc)
    x, result, start = _measure_pair(
        ((source, source_weights, source_num_classes), (target, target_weights,
                                                        target_num_classes)),
        data, n_samples, download=download, seed=seed, quiet=quiet, run_on=run_on,
        attack=config, convention=convention, batch_size=batch_size)
    _print_measure(result, convention, f"adversarial transferability: {source} vs {target} "
                   f"({len(x)} samples, {config.norm} eps={config.eps}, {config.solver})")
    if out is not None:
        from advtransfer.fileio import write_json

        payload = {"source": source, "target": target, "data": data, "n_samples": len(x),
                   "seed": seed, "device": run_on, "advtransfer": advtransfer.__version__,
                   "torch": torch.__version__, "wall_time_s": time.perf_counter() - start,
                   **result.to_dict()}
        write_json(out, payload)
        console.print(f"wrote {out}")


def _measure_pair(pair: tuple[tuple[str, Path | None, int | None], ...], data: str,
                  n_samples: int, *, download: bool, seed: int, quiet: bool, run_on: str,
                  **measure_kw: Any) -> tuple[torch.Tensor, Any, float]:
    """``measure``'s work: the inputs of ``data`` (read first: a bad --data costs no model
    build), the two models of ``pair`` ((spec, weights, num_classes) of the source, then the
    target; seeds ``seed`` and ``seed + 1``) and :func:`advtransfer.transferability` between
    them; (inputs, result, start time). A library error exits 1, Ctrl-C 130."""
    (source, _, _), (target, _, _) = pair
    try:
        with heartbeat(lambda: f"measure {source} vs {target}", enabled=not quiet):
            start = time.perf_counter()
            x = load_cli_data(data, n_samples)  # first: a bad --data costs no model build
            s, t = (load_cli_model(spec, weights, num_classes=num_classes, download=download,
                                   seed=seed + i, quiet=quiet).to(run_on)
                    for i, (spec, weights, num_classes) in enumerate(pair))
            result = advtransfer.transferability(
                s, t, x, noise_baseline=True, device=run_on, seed=seed, progress=not quiet,
                **measure_kw)
    except AdvTransferError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()
    return x, result, start


def _print_measure(result: Any, convention: str, title: str) -> None:
    """``measure``'s tables (:func:`_pair_tables`) and the notes that explain them."""
    for table in _pair_tables(result, title):
        console.print(table)
    console.print(f"convention {convention}: alpha2 and combined "
                  f"{'squared' if convention == 'authors' else 'unsquared'}. "
                  "S->T: attacks crafted on the source, applied to the target. a1>1: samples "
                  "with alpha1 above 1; |delta|: mean perturbation norm; dev / rand dev: the "
                  "victim's mean output deviation under the attack / under random noise of norm "
                  "eps.", style="dim")
    console.print(_convergence_line(result), style="dim")


@app.command()
@attack_options
@threads_option
def matrix(
    models: Annotated[list[str], typer.Argument(metavar="SPEC[=WEIGHTS]...",
                                                help="Two or more models (as --source of "
                                                     "measure); SPEC=WEIGHTS gives weights.")],
    num_classes: NumClassesOpt = None,
    download: DownloadOpt = False,
    data: InputsOpt = "digits",
    n_samples: SamplesOpt = 256,
    attack: AttackConfig | None = None,
    convention: ConventionOpt = "icml",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: Annotated[Path | None, typer.Option(metavar="FILE.json",
                                             help="Write the matrices as JSON here.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """N x N adversarial transferability between models, attacking each model once."""
    try:
        if len(models) < 2:
            raise AdvTransferError("matrix needs at least two models")
        names = _unique_names(models, "model")
        _check_specs([_split_spec(item, "model")[0] for item in models])
        run_on = str(resolve_device(device=device))
        assert attack is not None
        config = attack
        check_convention(convention)
        check_n_samples(n_samples, labelled=False)
        _check_out_file(out)
    except AdvTransferError as exc:
        _usage(exc)
    try:
        with heartbeat(lambda: f"matrix of {len(models)} models", enabled=not quiet):
            x = load_cli_data(data, n_samples)  # first: a bad --data costs no model build
            mods: dict[str, nn.Module] = {}
            for i, (name, item) in enumerate(zip(names, models, strict=True)):
                spec, weights = _split_spec(item, "model")
                mods[name] = load_cli_model(spec, weights, num_classes=num_classes,
                                            download=download, seed=seed + i,
                                            quiet=quiet).to(run_on)
            result = advtransfer.transfer_matrix(
                mods, x, attack=config, convention=convention, device=run_on, seed=seed,
                progress=not quiet)
    except AdvTransferError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()
    for metric in ("alpha1", "alpha2", "combined"):
        table = Table(title=f"{metric} [attacker row -> victim column]")
        table.add_column("attacker")
        for name in result.names:
            table.add_column(name, justify="right")
        for i, name in enumerate(result.names):
            table.add_row(name, *(f"{v:.4f}" for v in getattr(result, metric)[i]))
        console.print(table)
    if out is not None:
        from advtransfer.fileio import write_json

        write_json(out, {"data": data, "seed": seed, "device": run_on, **result.to_dict()})
        console.print(f"wrote {out}")


def _run_and_report(recipe: str, out: Path, *, overrides: list[str], device: str,
                    seed: int | None, quick: bool, quiet: bool, executor: str = "local",
                    address: str | None = None, num_cpus: float | None = None,
                    num_gpus: float | None = None,
                    allow_environment_change: bool = False) -> None:
    from advtransfer.experiments.runner import execute, plan

    start = time.perf_counter()
    try:
        check_executor_options(executor, num_cpus, num_gpus)
        checked = plan(recipe, out, overrides=overrides, device=device, seed=seed, quick=quick,
                       executor=executor, address=address, num_cpus=num_cpus,
                       num_gpus=num_gpus, allow_environment_change=allow_environment_change)
    except AdvTransferError as exc:
        _usage(exc)
    try:
        results = execute(checked, progress=not quiet)
    except AdvTransferError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        kept = out.is_dir() and any(out.iterdir())
        _interrupted(f"Finished units are kept in {out}: rerun the same command to resume."
                     if kept else f"Nothing was written to {out}.")
    _print_summary(results)
    console.print(f"finished in {time.perf_counter() - start:.1f} s "
                  f"({results['units']['computed']} units computed, "
                  f"{results['units']['reused']} reused)")
    console.print(f"report: {out / 'report.md'} (also report.html, results.json, results.csv, "
                  f"figures/)")


def _fitting_column(table: Table, header: str, values: list[str], *, text: bool) -> None:
    """A column that never truncates a number: numeric columns keep their widest cell; text
    columns (names) fold onto several lines when the terminal is narrow."""
    if text:
        table.add_column(header, justify="left", overflow="fold", min_width=6)
    else:  # a long header (a method's label) wraps at its spaces; the numbers never do
        width = max([*map(len, header.split()), *map(len, values)])
        table.add_column(header, justify="right", min_width=width, max_width=max(width, 10))


def _print_summary(results: dict[str, Any]) -> None:
    rep = results.get("report", {})
    records = results["records"]
    # the terminal gets the essentials; report.md / results.csv hold every column
    per_target = any("target" in r for r in records)
    columns = ["source", *(["target"] if per_target else []),
               *([rep["sweep"]] if rep.get("sweep") else []),
               *rep.get("outcomes", []), *rep.get("metrics", [])[:3]]
    table = Table(title=rep.get("title", results.get("recipe", "")), box=box.SIMPLE_HEAD,
                  padding=(0, 1), pad_edge=False)
    cells = [[_cell(record.get(col)) for col in columns] for record in records]
    labels = rep.get("labels", {})
    for k, col in enumerate(columns):
        header = (labels.get(col, col) if col in rep.get("metrics", []) else
                  col.replace("transfer_", "tr_").replace("accuracy", "acc"))
        _fitting_column(table, header, [row[k] for row in cells],
                        text=col in ("source", "target"))
    for row in cells:
        table.add_row(*row)
    console.print(table)
    if rep.get("notice"):  # e.g. a dry run on random weights: said where the numbers are
        console.print(f"note: {rep['notice']}", style="bold yellow")
    tau = results.get("selection", {}).get("weighted_tau")
    if tau:
        _print_tau_table(tau, rep.get("labels", {}),
                         rep.get("ground_truth", "fine-tuning accuracy"))
    rows = results.get("correlations", [])
    group = next((r["within"]["group"] for r in rows if r.get("within")), None)
    title = "correlations (pooled: Pearson r, Spearman rho; p-values"
    title += f"; within equal {group}: r_w, permutation p)" if group else ")"
    corr = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    cols = ["metric", "outcome", "n", "r", "p", "rho", "p(rho)", *(["r_w", "p_w"] if group
                                                                  else [])]
    cells = []
    for row in rows:
        within = row.get("within") or {}
        outcome = row["outcome"].replace("transfer_", "tr_").replace("accuracy", "acc")
        cells.append([labels.get(row["metric"], row["metric"]), outcome, str(row.get("n")),
                      _r_cell(row.get("pearson_r")),
                      _p_cell(row.get("pearson_p")), _r_cell(row.get("spearman_rho")),
                      _p_cell(row.get("spearman_p_exact") if row.get("spearman_p_exact")
                              is not None else row.get("spearman_p")),
                      *([_r_cell(within.get("r")), _p_cell(within.get("p"))] if group else [])])
    for k, col in enumerate(cols):
        _fitting_column(corr, col, [c[k] for c in cells], text=col in ("metric", "outcome"))
    for c in cells:
        corr.add_row(*c)
    console.print(corr)
    if group:
        console.print(f"r_w, p_w: correlation within groups of equal {group}, which {group} "
                      "itself cannot carry; the readings (clear / inconclusive) are in "
                      "report.md.")


def _r_cell(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _p_cell(value: Any) -> str:
    """A p-value in at most six characters (the report has them in full)."""
    if value is None:
        return "-"
    return "<0.001" if value < 1e-3 else f"{value:.2g}"


def _print_tau_table(tau: dict[str, dict[str, Any]], labels: dict[str, str],
                     truth: str) -> None:
    """The model-selection headline: weighted Kendall tau of each method (rows, best mean
    first) against the ground truth ``truth``, per target and mean."""
    targets = list(dict.fromkeys(t for row in tau.values() for t in row if t != "mean"))

    def mean(method: str) -> float:
        v = tau[method].get("mean")
        return v if isinstance(v, (int, float)) and v == v else -float("inf")

    table = Table(title=f"weighted Kendall tau against {truth} (1 = same ranking)",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("method")
    for t in [*targets, "mean"]:
        table.add_column(t, justify="right", no_wrap=True)
    for method in sorted(tau, key=mean, reverse=True):
        table.add_row(labels.get(method, method),
                      *(_cell(tau[method].get(t)) for t in [*targets, "mean"]))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


_METHODS_HELP = (
    "Comma-separated method ids; the first sorts the table. Adversarial: alpha1, alpha2, "
    "combined (target -> source; _s2t: source -> target; _features: on the penultimate "
    "features), rank averages " + ", ".join(RANK_AVERAGE_METHODS) + ". Estimators: "
    + ", ".join((*BASE_FEATURE_METHODS, *OUTPUT_METHODS, *GRADIENT_METHODS)) + "; ped_<one of "
    "the feature estimators>; pool-normalised " + ", ".join(
        f"{m} (parts {', '.join(p)})" for m, p in POOL_METHODS.items())
    + ". Ground truth: linear_probe (a head on the penultimate features; 'finetune', its "
    "former name, still works).")
_LOCK_HELP = (f"One process at a time: while a run uses DIR (lock file DIR/{LOCK_FILE}), "
              f"another run on it fails after {LOCK_TIMEOUT_S:g} s, naming the process to "
              "wait for.")
OutOpt = Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Run directory (results, report, stored units; a "
                                           "rerun resumes): new, empty, or an earlier run of "
                                           "the same configuration. " + _LOCK_HELP)]
SetOpt = Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE",
                                           help="Override a configuration field "
                                                "(repeatable).")]
RunSeedOpt = Annotated[int | None, typer.Option(metavar="INT",
                                                help="Override the configuration's seed.")]


@app.command("list")
def list_recipes(
    recipe: Annotated[str | None, typer.Argument(
        metavar="[RECIPE]", help="Show this recipe's configuration fields (the keys of --set "
                                 "and of a CONFIG.toml) with their defaults.")] = None,
) -> None:
    """List the recipes, or one recipe's configuration fields."""
    import dataclasses

    from advtransfer.experiments import all_recipes
    from advtransfer.experiments.config import to_dict
    from advtransfer.experiments.registry import get_recipe

    if recipe is None:
        table = Table(title="recipes (advtransfer run NAME --out DIR; advtransfer list NAME "
                            "for its fields)")
        table.add_column("recipe", no_wrap=True)
        table.add_column("description")
        for r in all_recipes():
            table.add_row(r.name, r.description)
        console.print(table)
        return
    try:
        found = get_recipe(recipe)
    except AdvTransferError as exc:
        _usage(exc)
    defaults = to_dict(found.config())
    table = Table(title=f"{found.name}: fields for --set KEY=VALUE (values in TOML syntax)",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("field", no_wrap=True)
    table.add_column("default", overflow="fold")
    for field in dataclasses.fields(found.config):
        table.add_row(field.name, json.dumps(defaults.get(field.name)))
    console.print(found.description)
    console.print(table)


@app.command("models")
def list_model_specs(
    prefix: Annotated[str | None, typer.Argument(
        metavar="[builtin|cifar|tv|timm|text|digits]", help="Only this namespace.")] = None,
) -> None:
    """List the model specs that --source, --target, matrix and rank accept (one a line;
    package.module:factory aside; digits: lists examples of its patterns mlpW, mlpWxD, cnnW,
    linear, lenet)."""
    from advtransfer.models.registry import list_models

    try:
        specs = list_models(prefix)
    except AdvTransferError as exc:
        _usage(exc)
    if prefix in (None, "timm", "timm:") and not any(s.startswith("timm:") for s in specs):
        err_console.print("timm is not installed, so no timm: models are listed: pip install "
                          "'advtransfer[timm]'", soft_wrap=True, markup=False)
        if prefix is not None:
            raise typer.Exit(code=1)
    for spec in specs:
        console.print(spec, markup=False, highlight=False, soft_wrap=True)


@app.command()
@threads_option
def run(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE|CONFIG.toml",
                                          help="A recipe name (see `advtransfer list`) or a "
                                               "TOML file with recipe = \"NAME\".")],
    out: OutOpt,
    set_: SetOpt = [],  # noqa: B006 - typer reads the default, it is never mutated
    device: DeviceOpt = "auto",
    seed: RunSeedOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="A size-limited run that exercises "
                                                        "every stage.")] = False,
    data_root: Annotated[Path | None, typer.Option(metavar="DIR", help="Dataset directory "
                                                   "(recipes on real data).")] = None,
    download: Annotated[bool, typer.Option("--download", help="Download missing datasets "
                                                              "(torchvision).")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Check dataset files against the "
                                                          "official checksums.")] = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    num_gpus: NumGpusOpt = None,
    allow_environment_change: Annotated[bool, typer.Option(
        "--allow-environment-change", help="Resume a run started with another advtransfer or "
        "torch version, device type or thread count, reusing its units (refused otherwise).")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a recipe into --out, reusing every finished unit found there, and write the report."""
    extra = [f'data_root="{data_root}"'] if data_root is not None else []
    extra += ["download=true"] if download else []
    extra += ["verify=true"] if verify else []
    _run_and_report(recipe, out, overrides=[*set_, *extra], device=device, seed=seed,
                    quick=quick, quiet=quiet, executor=executor, address=address,
                    num_cpus=num_cpus, num_gpus=num_gpus,
                    allow_environment_change=allow_environment_change)


@app.command()
@threads_option
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Run directory. " + _LOCK_HELP)] = Path(
        "runs/digits-distribution"),
    device: DeviceOpt = "auto",
    seed: RunSeedOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the embedded default (recipe digits-distribution on the bundled digits)."""
    _run_and_report("digits-distribution", out, overrides=[], device=device, seed=seed,
                    quick=False, quiet=quiet)


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(metavar="DIR",
                                              help="A run directory with results.json.")],
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", help="Write the report there instead (DIR is then only read: "
        "a run in a read-only place can be reported).")] = None,
) -> None:
    """Rewrite the report (Markdown, HTML, CSV, figures) of a finished run."""
    from advtransfer.experiments import report as write

    try:
        results = write(directory, out)
    except AdvTransferError as exc:
        _fail(exc)
    _print_summary(results)
    console.print(f"report: {(out or directory) / 'report.md'}")


def _split_spec(item: str, option: str) -> tuple[str, Path | None]:
    """'SPEC=WEIGHTS' -> (SPEC, Path(WEIGHTS)); 'SPEC' -> (SPEC, None)."""
    spec, sep, weights = item.partition("=")
    if not spec or (sep and not weights):
        raise AdvTransferError(f"{option} must be SPEC or SPEC=WEIGHTS; got {item!r}")
    return spec, Path(weights) if weights else None


def _spec_and_weights(item: str, weights: Path | None, option: str) -> tuple[str, Path | None]:
    """``--source SPEC=WEIGHTS`` or ``--source SPEC --source-weights WEIGHTS`` (not both)."""
    spec, inline = _split_spec(item, option)
    if inline is not None and weights is not None:
        raise AdvTransferError(f"{option} {item} gives weights and {option}-weights {weights} "
                               "gives others; give them once")
    return spec, inline if inline is not None else weights


def load_labelled_data(spec: str, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of --data ('digits' or a .safetensors file with tensors 'x' and 'y')."""
    x, y = _data_tensors(spec, n_samples, labelled=True)
    return x, y


_ReferenceOpt = Annotated[str, typer.Option(metavar="SPEC[=WEIGHTS]",
                                            help="The target task's reference model: "
                                                 + _SPEC_HELP)]
_CandidateOpt = Annotated[list[str], typer.Option("--candidate", "-c", metavar="SPEC[=WEIGHTS]",
                                                  help="A candidate source model, as "
                                                       "--reference (repeatable).")]
_LabelledDataOpt = Annotated[str, typer.Option(metavar="digits|FILE",
                                               help="Labelled target data: 'digits' or a "
                                                    ".safetensors file with tensors 'x' and "
                                                    "'y'.")]
_MethodsOpt = Annotated[str, typer.Option(metavar="M1,M2,...", help=_METHODS_HELP)]
_LabelledSamplesOpt = Annotated[int, typer.Option(metavar="INT", help="Labelled samples used "
                                                                      "(at most what --data "
                                                                      "holds).")]
_AttackSamplesOpt = Annotated[int, typer.Option(metavar="INT", help="Inputs attacked (a seeded "
                                                                    "subset).")]
_BatchOpt = Annotated[int, typer.Option(metavar="INT", help="Batch size.")]
_RankSeedOpt = Annotated[int, typer.Option(metavar="INT", help="Seed for built-in models and "
                                                               "attacks.")]
_RankOutOpt = Annotated[Path | None, typer.Option(metavar="FILE.json|FILE.csv",
                                                  help="Write the ranking here.")]


@app.command("rank")
@attack_options
@threads_option
def rank_command(
    reference: _ReferenceOpt,
    candidate: _CandidateOpt,
    num_classes: NumClassesOpt = None,
    download: DownloadOpt = False,
    data: _LabelledDataOpt = "digits",
    methods: _MethodsOpt = ",".join(DEFAULT_METHODS),
    n_samples: _LabelledSamplesOpt = 512,
    attack_samples: _AttackSamplesOpt = 256,
    attack: AttackConfig | None = None,
    convention: ConventionOpt = "icml",
    batch_size: _BatchOpt = 128,
    device: DeviceOpt = "auto",
    seed: _RankSeedOpt = 0,
    out: _RankOutOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    num_gpus: NumGpusOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Rank candidate source models for a target task (model selection), best first."""
    from advtransfer.executors import get_executor

    try:
        names = _rank_candidates(reference, candidate, out)
        method_list = _rank_methods(methods)
        run_on = str(resolve_device(device=device))
        assert attack is not None  # checked by attack_options, before any model is loaded
        config = attack
        check_convention(convention)
        check_n_samples(n_samples, labelled=True)
        check_n_samples(attack_samples, labelled=False, option="--attack-samples")
        _check_out_file(out)
        check_executor_options(executor, num_cpus, num_gpus)
        runner = get_executor(executor, address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    except AdvTransferError as exc:
        _usage(exc)
    x, result, start = _rank_run(
        reference, dict(zip(names, candidate, strict=True)), data, n_samples,
        num_classes=num_classes, download=download, seed=seed, quiet=quiet, run_on=run_on,
        runner=runner, methods=method_list, attack=config, convention=convention,
        attack_samples=attack_samples, batch_size=batch_size)
    _print_rank(result, f"model selection: {len(names)} candidates for {data} "
                        f"({len(x)} samples), ranked by {result.methods[0]}", len(x))
    if out is not None:
        from advtransfer.fileio import atomic_write_text, write_json

        if out.suffix.lower() == ".csv":
            atomic_write_text(out, result.to_csv())
        else:
            write_json(out, {"reference": reference, "candidate_specs": list(candidate),
                             "data": data, "n_samples": len(x), "seed": seed,
                             "device": run_on, "advtransfer": advtransfer.__version__,
                             "torch": torch.__version__,
                             "wall_time_s": time.perf_counter() - start,
                             **result.to_dict()})
        console.print(f"wrote {out}")


def _rank_candidates(reference: str, candidate: list[str], out: Path | None) -> list[str]:
    """Usage checks of ``rank``'s --out suffix, --candidate and model specs; the candidates'
    display names (:func:`_unique_names`)."""
    if out is not None and out.suffix.lower() not in (".json", ".csv"):
        raise AdvTransferError(f"--out must end in .json or .csv; got {out}")
    if not candidate:
        raise AdvTransferError("give at least one --candidate")
    names = _unique_names(candidate, "--candidate")
    _check_specs([_split_spec(reference, "--reference")[0],
                  *(_split_spec(item, "--candidate")[0] for item in candidate)])
    return names


def _rank_methods(methods: str) -> list[str]:
    """The method names of ``--methods`` (comma-separated, blanks dropped), each one of
    :data:`advtransfer.selection.METHODS`, at least one."""
    from advtransfer import selection

    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in method_list if m not in selection.METHODS]
    if unknown or not method_list:
        raise AdvTransferError(f"--methods has unknown name(s) {unknown}; known methods are "
                               f"{', '.join(selection.METHODS)}")
    return method_list


def _rank_run(reference: str, candidates: dict[str, str], data: str, n_samples: int, *,
              num_classes: int | None, download: bool, seed: int, quiet: bool, run_on: str,
              runner: Any, methods: list[str], attack_samples: int,
              **rank_kw: Any) -> tuple[torch.Tensor, Any, float]:
    """``rank``'s work: the labelled data (read first: a bad --data costs no model build), the
    reference (only when a method needs it; seed ``seed``) and
    :func:`advtransfer.selection.rank` of the ``candidates`` (display name -> SPEC[=WEIGHTS];
    candidate i built with seed ``seed + 1 + i`` inside its unit, one at a time or on a Ray
    worker); (inputs, result, start time). A library error exits 1, Ctrl-C 130; the executor
    ``runner`` is closed either way."""
    from advtransfer import selection
    from advtransfer.executors import close

    try:
        with heartbeat(lambda: f"rank {len(candidates)} candidates", enabled=not quiet):
            start = time.perf_counter()
            # loaded inside each candidate's unit, one at a time (or on a Ray worker)
            pool = {name: functools.partial(load_cli_model, *_split_spec(item, "--candidate"),
                                            num_classes=num_classes, download=download,
                                            seed=seed + 1 + i, quiet=True)
                    for i, (name, item) in enumerate(candidates.items())}
            x, y = load_labelled_data(data, n_samples)  # first: a bad --data costs no model build
            needs_reference = selection.needs_reference(methods)
            ref = (load_cli_model(*_split_spec(reference, "--reference"), num_classes=num_classes,
                                  download=download, seed=seed, quiet=quiet).to(run_on)
                   if needs_reference else None)
            if needs_reference and attack_samples > len(x):
                warn(f"--attack-samples {attack_samples} is more than the {len(x)} samples used: "
                     f"attacking all {len(x)}")
            result = selection.rank(
                pool, (x, y), ref, methods=methods, attack_samples=attack_samples,
                device=run_on, seed=seed, progress=not quiet, executor=runner, **rank_kw)
    except AdvTransferError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()
    finally:
        close(runner)  # a Ray started for this command is shut down
    return x, result, start


def _print_rank(result: Any, title: str, n: int) -> None:
    """``rank``'s table (:func:`_print_rank_table`) and the notes that explain it."""
    _print_rank_table(result, title)
    console.print("Higher = predicted to transfer better, for every method. alpha1/alpha2/"
                  "combined: attacks crafted on the reference, applied to each candidate "
                  "(target -> source); *_s2t the reverse.", style="dim")
    if result.reference_accuracy is not None:
        console.print(f"reference accuracy on the target data: {result.reference_accuracy:.4f}"
                      f" ({n} samples; the alpha scores are relative to this model)")


def _print_rank_table(result: Any, title: str) -> None:
    """The ranking as one table per group of method columns that fits the terminal, each with
    the rank and candidate columns: no column is ever dropped or cut."""
    rows = result.table()
    cells = {m: [_cell(row[m]) for row in rows] for m in result.methods}
    width = {m: max(len(m), *(len(c) for c in cells[m])) for m in result.methods}
    names = [str(row["candidate"]) for row in rows]
    # long candidate names wrap within a third of the width rather than push the scores out
    name_width = min(max(len("candidate"), *(len(n) for n in names)),
                     max(20, console.width // 3))
    fixed = len("rank") + name_width + 6  # each column is padded and separated by 3 spaces
    groups: list[list[str]] = [[]]
    used = fixed
    for m in result.methods:
        if groups[-1] and used + 3 + width[m] > console.width:
            groups.append([])
            used = fixed
        groups[-1].append(m)
        used += 3 + width[m]
    for k, group in enumerate(groups):
        part = f" ({k + 1}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=title + part, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        table.add_column("rank", justify="right", no_wrap=True)
        table.add_column("candidate", overflow="fold", max_width=name_width)
        for m in group:
            table.add_column(m, justify="right", no_wrap=True)
        for i, row in enumerate(rows):
            table.add_row(str(row["rank"]), names[i], *(cells[m][i] for m in group))
        console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

