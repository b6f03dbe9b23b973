"""``manta-miner``: the miner's command line.

The daemon's commands (:mod:`miner.daemon.cli`) sit at the top: ``init``, ``register``,
``run``, ``status``, ``withdraw``, reading ``--config`` (a TOML file) and ``MANTA_``
environment variables. ``automl`` runs the AutoML engine locally, without any chain:

- ``manta-miner automl train SPEC.toml [--out DIR] [--resume]``: progressive-shrinking
  training of a supernet with progress bars and step checkpoints.
- ``manta-miner automl search --run DIR --max-flops N``: measure sampled sub-networks,
  fit the accuracy predictor, search under the limits, export the chosen network.
- ``manta-miner automl supernets``: the registered supernet names.
- ``manta-miner automl export-dataset NAME OUT.npz [--folds K --fold I [--rest]]``: a
  built-in dataset's images ``i % K == I`` (or all the others) as an ``.npz`` (``x``, ``y``),
  so a process that cannot import miner code (the demo) can split it into disjoint parts
  and pack them with ``manta data pack``; ``procedural-stereo`` renders seeded stereo pairs
  (``left``, ``right``, ``disparity``) sized for a stereo supernet.

Each command parses, calls one function of :mod:`miner.automl.runs` and renders. Errors
are handled once: a :class:`~node.errors.MantaError` prints one line to stderr and exits
with code 1.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from node.cli_errors import MantaErrorGroup
from node.errors import ConfigError

logger = logging.getLogger(__name__)


_ErrorHandlingGroup = MantaErrorGroup


app = typer.Typer(
    cls=_ErrorHandlingGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="MANTA miner tools.",
)
automl_app = typer.Typer(
    cls=_ErrorHandlingGroup,
    no_args_is_help=True,
    help="Train and search once-for-all supernets locally.",
)
app.add_typer(automl_app, name="automl")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="TOML settings file.")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING… (default: the settings' log_level)")
    ] = None,
) -> None:
    """MANTA miner: run the daemon, or the AutoML engine alone (``automl``)."""
    from miner.daemon.settings import load_miner_settings

    level = log_level or load_miner_settings(config).log_level  # TOML file, MANTA_LOG_LEVEL
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = config  # the daemon commands read it through ctx.find_root().obj


def _mount_daemon_commands() -> None:
    """Put the daemon's commands (init, register, run, status, withdraw) on this app."""
    from miner.daemon.cli import app as daemon_app

    app.registered_commands.extend(daemon_app.registered_commands)


_mount_daemon_commands()


def _device(name: str) -> Any:
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: CUDA is not available on this machine")
    return device


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@automl_app.command("train")
def train_command(
    spec: Annotated[Path, typer.Argument(help="Training spec (TOML).")],
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: next to the spec).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in --out.")
    ] = False,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda:0.")] = "cpu",
    json_out: JsonOpt = False,
) -> None:
    """Train a supernet by progressive shrinking, checkpointing as it goes."""
    from miner.automl.config import load_train_config
    from miner.automl.runs import prepare_training, run_training
    from miner.automl.train import StepReport

    config = load_train_config(spec)
    out_dir = out or spec.with_suffix("")
    prepared = prepare_training(config, out_dir, resume, _device(device))
    console = Console(stderr=True, quiet=json_out)
    with _progress(console) as progress:
        total = progress.add_task(
            "training",
            total=prepared.trainer.plan.total_steps,
            completed=prepared.trainer.global_step,
            info="",
        )

        def show(report: StepReport) -> None:
            loss = sum(report.losses) / len(report.losses)
            acc = sum(report.accuracies) / len(report.accuracies)
            progress.update(
                total,
                completed=report.global_step,
                description=f"{report.phase} {report.phase_index + 1}/{report.n_phases}",
                info=f"loss {loss:.3f} {report.metric} {acc:.2f} {report.samples_per_s:.0f} img/s",
            )

        summary = run_training(prepared, show)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "out": str(summary.out_dir),
                    "steps": summary.global_step,
                    "resumed_step": summary.resumed_step,
                    "val_accuracy": summary.val_accuracy,
                },
                sort_keys=True,
            )
        )
        return
    out_console = Console()
    if summary.resumed_step is not None:
        out_console.print(f"resumed at step {summary.resumed_step}")
    out_console.print(f"trained {summary.global_step} steps -> {summary.out_dir}")
    for name, accuracy in summary.val_accuracy.items():
        out_console.print(f"  {name} sub-network: val {summary.metric} {accuracy:.4f}")


@automl_app.command("search")
def search_command(
    run: Annotated[Path, typer.Option(help="A finished training run folder.")],
    out: Annotated[Path | None, typer.Option(help="Export folder (default: RUN/search).")] = None,
    max_flops: Annotated[float | None, typer.Option(help="Upper limit on MACs.")] = None,
    max_params: Annotated[float | None, typer.Option(help="Upper limit on parameters.")] = None,
    objective: Annotated[str, typer.Option(help="Cost to minimise: flops or params.")] = "flops",
    n_subnets: Annotated[int, typer.Option(help="Sub-networks measured for the predictor.")] = 40,
    population: Annotated[int, typer.Option()] = 64,
    generations: Annotated[int, typer.Option()] = 60,
    seed: Annotated[int, typer.Option()] = 0,
    onnx: Annotated[bool, typer.Option(
        help="Also export model.onnx (pip install 'manta[onnx]').")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Search a trained supernet under limits and export the chosen sub-network."""
    from miner.automl.runs import SearchRequest, prepare_search, run_search

    limits = {
        name: value
        for name, value in (("flops", max_flops), ("params", max_params))
        if value is not None
    }
    request = SearchRequest(
        run_dir=run,
        out_dir=out or run / "search",
        limits=limits,
        objective=objective,
        n_subnets=n_subnets,
        population=population,
        generations=generations,
        seed=seed,
        onnx=onnx,
    )
    prepared = prepare_search(request)
    console = Console(stderr=True, quiet=json_out)
    with _progress(console) as progress:
        task = progress.add_task("measuring sub-networks", total=n_subnets, info="")
        summary = run_search(prepared, lambda done, total: progress.update(task, completed=done))
    result = {
        "out": str(summary.out_dir),
        "arch": summary.arch.to_dict(),
        "val_accuracy": summary.val_accuracy,
        "predicted_accuracy": summary.predicted_accuracy,
        "costs": summary.costs,
        "predictor_kendall_tau": summary.predictor_kendall_tau,
        "front_size": summary.front_size,
    }
    if json_out:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    out_console = Console()
    out_console.print(f"exported -> {summary.out_dir}")
    out_console.print(
        f"  val {summary.metric} {summary.val_accuracy:.4f} "
        f"(predicted {summary.predicted_accuracy:.4f})"
    )
    for name, value in summary.costs.items():
        out_console.print(f"  {name} {value:,.0f}")
    out_console.print(
        f"  predictor Kendall tau {summary.predictor_kendall_tau:.3f}, "
        f"front of {summary.front_size}"
    )


@automl_app.command("supernets")
def supernets_command() -> None:
    """List the registered supernets."""
    from miner.automl.registry import list_supernets

    for name in list_supernets():
        typer.echo(name)


@automl_app.command("export-dataset")
def export_dataset_command(
    name: Annotated[str, typer.Argument(
        help="Built-in dataset: digits, animal-mnist or procedural-stereo.")],
    out: Annotated[Path, typer.Argument(
        help="Output .npz (x and y; left, right and disparity for stereo).")],
    folds: Annotated[int, typer.Option(min=1, help="Split the images i into folds i % K.")] = 1,
    fold: Annotated[int, typer.Option(min=0, help="The fold to export (0..K-1).")] = 0,
    rest: Annotated[bool, typer.Option(help="Export every image outside --fold.")] = False,
    pairs: Annotated[int, typer.Option(min=2, help="Stereo: how many pairs to render.")] = 128,
    seed: Annotated[int, typer.Option(min=0, help="Stereo: the scenes' seed.")] = 1,
    supernet: Annotated[str, typer.Option(
        help="Stereo: the supernet whose input size and disparity range the pairs fit.")]
    = "ofa_dispnetc_micro",
    resolution: Annotated[int | None, typer.Option(
        min=8, help="Stereo: the input resolution (default: the supernet's largest).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write one fold of a built-in dataset (images i with i % FOLDS == FOLD; with --rest,
    all the others) as an .npz. Folds interleave, so each holds every class even where
    the stored set is sorted by class.

    ``procedural-stereo`` has no stored set: it renders PAIRS seeded scenes sized for the
    supernet at RESOLUTION, as a stereo task trains on. A seed other than the task's gives
    scenes its miners never saw: a client's held-out pairs for ``manta task verify``."""
    import numpy as np

    from miner.automl.data import STEREO_DATASETS, animal_mnist_arrays, digits_arrays

    if name in STEREO_DATASETS:
        _export_stereo(out, pairs, seed, supernet, resolution, json_out)
        return
    loaders = {"digits": digits_arrays, "animal-mnist": animal_mnist_arrays}
    if name not in loaders:
        known = sorted([*loaders, *STEREO_DATASETS])
        raise ConfigError(f"cannot export {name!r}; built-in datasets: {known}")
    if fold >= folds:
        raise ConfigError(f"fold {fold} is outside 0..{folds - 1}")
    x, y = loaders[name]()
    chosen = (np.arange(len(y)) % folds == fold) != rest
    if not chosen.any():
        raise ConfigError(f"the selection of {name} ({len(y)} images) is empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:  # a file object: numpy would append .npz to a bare name
        np.savez(handle, x=x[chosen], y=y[chosen].astype(np.int64))
    result = {"name": name, "out": str(out), "folds": folds, "fold": fold, "rest": rest,
              "images": int(chosen.sum()), "total": len(y)}
    if json_out:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    what = "all but fold" if rest else "fold"
    Console().print(f"exported {name} {what} {fold}/{folds} ({result['images']} images) -> {out}")


def _export_stereo(out: Path, pairs: int, seed: int, supernet: str, resolution: int | None,
                   json_out: bool) -> None:
    """Render ``pairs`` procedural scenes as ``left``/``right`` ([N, 3, H, W], 0..1) and
    ``disparity`` ([N, H, W], pixels of the left image)."""
    import numpy as np

    from miner.automl.registry import supernet_config
    from miner.automl.runs import stereo_pairs

    sconf = supernet_config(supernet)
    if not hasattr(sconf, "max_disparity"):
        raise ConfigError(f"{supernet!r} is not a stereo supernet")
    if resolution is not None:
        sconf = supernet_config(supernet, space={"resolutions": [resolution],
                                                 "n_stages": sconf.space.n_stages})
    data = stereo_pairs(sconf, pairs, seed)
    x = (data.x.numpy() + 1.0) / 2.0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        np.savez(handle, left=x[:, :3], right=x[:, 3:],
                 disparity=data.y.numpy().astype(np.float32))
    height, width = x.shape[-2:]
    result = {"name": "procedural-stereo", "out": str(out), "pairs": pairs, "seed": seed,
              "supernet": supernet, "height": int(height), "width": int(width),
              "images": pairs, "total": pairs}
    if json_out:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    Console().print(f"rendered {pairs} stereo pairs of {height}x{width} (seed {seed}) -> {out}")


def main() -> None:
    """Console-script entry point."""
    app()
