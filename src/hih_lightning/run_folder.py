"""A run folder is the unit: resume and evaluate a run with the config it was trained with.

``hih-train ckpt_path=...`` and ``hih-eval ckpt_path=...|run_dir=...`` used to compose the
*default* config and load the checkpoint into it, so a finished 8-epoch run resumed as
"epoch 9/59" under other hyper-parameters, and a non-default codec's checkpoint failed to
load. Here the run's saved ``.hydra/config.yaml`` is the base; the command line's overrides
are applied on top as the change they make to the run's own composition (the run's
``overrides.yaml`` composed with and without them), so a config group (``model/codec=dark``,
``logger=none``) or an experiment works as well as a ``key=value``. An override that changes
the network's parameter shapes is refused: the checkpoint could not load into it.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import functools
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from hih_lightning.atomic import atomic_file
from hih_lightning.checkpoints import load_checkpoint
from hih_lightning.config import (
    CONFIG_DIR,
    check_ranges,
    check_required,
    instantiate_node,
    resolve_ckpt_path,
)
from hih_lightning.errors import USER_ERRORS, ConfigError

log = logging.getLogger(__name__)

SAVED_CONFIG = Path(".hydra") / "config.yaml"
SAVED_OVERRIDES = Path(".hydra") / "overrides.yaml"
RESUMES = Path(".hydra") / "resumes.yaml"
# what hih-eval takes from the trained run; everything else (trainer, logger, paths) is its own
EVAL_RUN_KEYS = ("data", "model", "seed", "experiment_name", "tags")
# keys of the command line that say which run, not how it is configured
_RUN_SELECTORS = ("ckpt_path", "run_dir", "published_checkpoint")


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run folder that holds ``checkpoint`` (``<run>/checkpoints/x.ckpt``) and its saved
    config, or None for a checkpoint file on its own."""
    for parent in Path(checkpoint).resolve().parents[:2]:
        if (parent / SAVED_CONFIG).is_file():
            return parent
    return None


def run_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint a finished run was tested with: its best one, else ``last.ckpt``."""
    folder = Path(run_dir) / "checkpoints"
    best = sorted((p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"),
                  key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise ConfigError(f"run_dir={str(run_dir)!r}: no checkpoint under {folder}")


def task_overrides() -> list[str]:
    """The command line's config overrides of the running Hydra job ([] outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def with_run_config(cfg: DictConfig, overrides: Sequence[str], task: str) -> DictConfig:
    """``cfg`` as the run behind its ``ckpt_path`` (or ``run_dir``) was configured, with the
    command-line ``overrides`` applied on top; ``cfg`` itself when there is no such run.

    For ``task="train"`` the result continues the run in its own folder (``paths.output_dir``
    is the run folder); for ``task="eval"`` only :data:`EVAL_RUN_KEYS` come from the run.
    """
    if cfg.get("run_dir"):
        if cfg.get("ckpt_path"):
            raise ConfigError("give ckpt_path or run_dir, not both")
        ckpt = run_checkpoint(cfg.run_dir)
    else:
        resolved = resolve_ckpt_path(cfg)
        if resolved is None:
            return cfg
        ckpt = Path(resolved)
    # read it now: a truncated or foreign file is named in one line here, not in the traceback
    # of Lightning's own load inside trainer.fit / trainer.test
    load_checkpoint(ckpt, required=("state_dict",))
    run_dir = run_dir_of(ckpt)
    if run_dir is None:
        log.warning("%s has no saved run config next to it (.hydra/config.yaml): using the "
                    "config as composed from the command line", ckpt)
        return _with(cfg, ckpt_path=str(ckpt))
    saved = OmegaConf.load(run_dir / SAVED_CONFIG)
    run_overrides = _saved_overrides(run_dir)
    # an override the run was made with changes nothing (a requeued job repeats them all)
    changes = [o for o in overrides if _key(o) not in _RUN_SELECTORS and o not in run_overrides]
    if task == "eval":
        # eval-only keys (trainer, logger, paths) are not part of the training composition
        changes = [o for o in changes if _key(o).split(".")[0].split("/")[0]
                   in EVAL_RUN_KEYS + ("experiment",)]
    patched = OmegaConf.create(OmegaConf.to_container(saved, resolve=False))
    changed = _apply_overrides(patched, run_overrides, changes)
    _refuse_shape_changes(saved, patched, changed, changes, run_dir)
    if task == "train":
        merged = patched
        merged.paths.output_dir = str(run_dir)
        _new_logger_versions(merged, run_dir)
    else:
        merged = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        for key in EVAL_RUN_KEYS:
            if key in patched:
                merged[key] = patched[key]
    merged.ckpt_path = str(ckpt)
    log.info("run %s: using its saved config%s", run_dir,
             f" with {', '.join(changes)} on top" if changes else " as it was")
    if changed:
        log.info("changed by the command line: %s", ", ".join(changed))
    return merged


def _new_logger_versions(cfg: DictConfig, run_dir: Path) -> None:
    """A resume logs into a new version folder (csv/resume1/, ...): the CSV logger would
    otherwise delete the metrics the run logged before it was interrupted."""
    count = len(OmegaConf.load(run_dir / RESUMES)) if (run_dir / RESUMES).is_file() else 0
    for node in (cfg.get("logger") or {}).values():
        if isinstance(node, DictConfig) and "version" in node:
            node.version = f"resume{count + 1}"


def _with(cfg: DictConfig, **values: Any) -> DictConfig:
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key, value in values.items():
        out[key] = value
    return out


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _saved_overrides(run_dir: Path) -> list[str]:
    path = run_dir / SAVED_OVERRIDES
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _apply_overrides(target: DictConfig, run_overrides: list[str], changes: list[str]
                     ) -> list[str]:
    """Patch ``target`` with what ``changes`` alter in the run's own composition; returns the
    changed keys. Composing twice (with and without) handles groups and packages exactly."""
    if not changes:
        return []
    fixed = [o for o in run_overrides if _key(o) not in _RUN_SELECTORS]
    try:
        before = _compose(fixed)
        after = _compose(fixed + changes)
    except Exception as err:  # noqa: BLE001 - Hydra raises several types for bad overrides
        raise ConfigError(f"cannot apply {changes} on top of the run's overrides {fixed}: "
                          f"{err}") from err
    changed = _patch(target, before, after, "")
    # a key the project gained after the run was made: the run's config lacks it, and when
    # its new default is the value asked for, before and after agree and the diff misses it
    composed = OmegaConf.create(after)
    for key in (_key(o) for o in changes if "/" not in _key(o)):
        value = OmegaConf.select(composed, key, default=_MISSING)
        if value is not _MISSING and OmegaConf.select(target, key, default=_MISSING) is _MISSING:
            OmegaConf.update(target, key, value, merge=False, force_add=True)
            changed.append(key)
    return changed


def _compose(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        cfg = compose("train", overrides=overrides)
    else:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def _patch(target: DictConfig, before: Any, after: Any, prefix: str) -> list[str]:
    """Apply to ``target`` every difference between ``before`` and ``after`` (containers);
    returns the changed keys."""
    if isinstance(before, dict) and isinstance(after, dict):
        changed = []
        for key in list(before) + [k for k in after if k not in before]:
            full = f"{prefix}.{key}" if prefix else str(key)
            if key in after:
                changed += _patch(target, before.get(key, _MISSING), after[key], full)
                continue
            parent = OmegaConf.select(target, prefix) if prefix else target
            if isinstance(parent, DictConfig) and key in parent:
                del parent[key]
            changed.append(full)
        return changed
    if before == after:
        return []
    OmegaConf.update(target, prefix, after, merge=False, force_add=True)
    return [prefix]


_MISSING = object()


def _refuse_shape_changes(saved: DictConfig, patched: DictConfig, changed: list[str],
                          changes: list[str], run_dir: Path) -> None:
    """Build the network both ways when an override touches it; refuse different shapes."""
    if not any(key.split(".")[0] in ("model", "data") for key in changed):
        return
    old, new = _shapes(saved), _shapes(patched)
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        example = diff[0]
        raise ConfigError(
            f"{' '.join(changes)} changes the network's shape ({len(diff)} parameter(s), e.g. "
            f"{example}: {old.get(example)} -> {new.get(example)}): the checkpoint of run "
            f"{run_dir} cannot load into it (a different network needs a new run).")


def _shapes(cfg: DictConfig) -> dict[str, tuple[int, ...]]:
    model = instantiate_node(cfg, "model")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# -- resuming in the run's own folder ---------------------------------------------------------
def is_complete(cfg: DictConfig) -> bool:
    """Whether the resumed checkpoint already holds the whole training budget and the run's
    test report exists: then resuming has nothing left to do."""
    run_dir = Path(cfg.paths.output_dir)
    if not cfg.get("ckpt_path") or not (run_dir / "metrics.json").is_file():
        return False
    state = load_checkpoint(cfg.ckpt_path, weights_only=False)
    max_epochs = cfg.trainer.get("max_epochs")
    max_steps = cfg.trainer.get("max_steps") or -1
    done_epochs = max_epochs is not None and max_epochs >= 0 and state["epoch"] + 1 >= max_epochs
    done_steps = max_steps > 0 and state["global_step"] >= max_steps
    return bool(done_epochs or done_steps)


def saved_metrics(run_dir: str | Path) -> dict[str, float]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())["metrics"]


def record_resume(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Save the config the run now continues with, and append this resume to its history.
    Both files are replaced whole (:func:`~hih_lightning.atomic.atomic_file`): a config cut
    short by a kill would break every later resume, eval and predict of the run."""
    run_dir = Path(cfg.paths.output_dir)
    save_yaml(cfg, run_dir / SAVED_CONFIG)
    history = OmegaConf.load(run_dir / RESUMES) if (run_dir / RESUMES).is_file() else []
    history = list(OmegaConf.to_container(history)) if history else []
    history.append({"time": datetime.datetime.now().isoformat(timespec="seconds"),
                    "checkpoint": str(cfg.ckpt_path), "overrides": list(overrides)})
    save_yaml(OmegaConf.create(history), run_dir / RESUMES)


def save_yaml(cfg: DictConfig | ListConfig, path: Path) -> None:
    """``OmegaConf.save``, written atomically."""
    with atomic_file(path) as f:
        f.write(OmegaConf.to_yaml(cfg).encode("utf-8"))


def move_job_log(job_dir: Path, run_dir: Path) -> None:
    """Continue this process's log in the resumed run's folder and drop Hydra's new, empty
    one: a resume adds to its run instead of leaving a folder that looks like a lost job."""
    if job_dir.resolve() == run_dir.resolve():
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            name = Path(handler.baseFilename).name
            root.removeHandler(handler)
            handler.close()
            moved = logging.FileHandler(run_dir / name, mode="a")
            moved.setFormatter(handler.formatter)
            moved.setLevel(handler.level)
            root.addHandler(moved)
    discard_job_dir(job_dir, force=True)


# -- failed starts ----------------------------------------------------------------------------
def discard_job_dir(job_dir: Path, force: bool = False) -> bool:
    """Remove a job folder that holds no result (no checkpoint, no metrics), so a failed
    start does not show up later as an unfinished job. Returns whether it was removed."""
    if not job_dir.is_dir():
        return False
    results = [p for p in job_dir.rglob("*") if p.suffix == ".ckpt" or p.name == "metrics.json"]
    if results and not force:
        return False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and \
                Path(handler.baseFilename).parent.resolve() == job_dir.resolve():
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(job_dir, ignore_errors=True)
    return True


def _user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException

    return (*USER_ERRORS, HydraException)


@contextlib.contextmanager
def user_errors(prog: str, job_dir: str | Path | None) -> Iterator[None]:
    """Print a config or data error as one line and exit 2, without a traceback (set
    ``HYDRA_FULL_ERROR=1`` for it) and without leaving an empty job folder behind."""
    try:
        yield
    except _user_errors() as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        removed = job_dir is not None and discard_job_dir(Path(job_dir))
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr, flush=True)
        if removed:
            print(f"{prog}: removed the empty run folder {job_dir}", file=sys.stderr)
        raise SystemExit(2) from None


def job_dir() -> Path | None:
    """The running Hydra job's output folder (None outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


# -- the command line's own mistakes, before Hydra makes a run folder --------------------------
def one_line(err: BaseException) -> str:
    """``err`` as one line; Hydra's messages for an unknown key or config group option become
    the key with the nearest existing one, or the group with its options, closest first."""
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = err.__cause__
    if isinstance(err, MissingConfigException) and err.options is not None \
            and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        options = difflib.get_close_matches(option, err.options, n=len(err.options), cutoff=0)
        return (f"{group}={option}: no such option in config group '{group}' (the options, "
                f"closest first: {', '.join(options)})")
    if isinstance(err, ConfigCompositionException) and \
            isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        key = str(cause.full_key)
        parent = cause.parent_node
        known = [str(k) for k in parent.keys() if not str(k).startswith("_") and k != "hydra"] \
            if isinstance(parent, DictConfig) else []
        close = difflib.get_close_matches(key.rpartition(".")[2], known, n=1)
        prefix = key.rpartition(".")[0]
        hint = f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
        return f"{key}: no such key in the config{hint} (to add a new key: +{key}=...)"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if "Config search path:" in lines:  # Hydra's search path: nothing for a user to act on
        lines = lines[:lines.index("Config search path:")]
    return " ".join(lines) if lines else type(err).__name__


def check_command_line(prog: str, config_name: str, argv: Sequence[str],
                       check: Callable[[DictConfig], Any] | None = None) -> None:
    """Compose ``config_name`` with the overrides of ``argv`` as Hydra is about to, and check
    that no required value is missing, the values' ranges and the tool's own ``check``: a
    mistake is one line and exit status 2 (:func:`user_errors`) before Hydra makes a run
    folder or prints its own several lines. With ``--multirun`` each value of a sweep is
    composed once, so the sweep's last job cannot fail on a typo after the first ran. A
    command line this does not cover (``--cfg``, ``--help``, another config folder, an
    ``interval()`` sweep) is left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra

    args = get_args_parser().parse_args(list(argv))
    if any((args.help, args.hydra_help, args.cfg, args.info, args.shell_completion,
            args.config_path, args.config_dir, args.experimental_rerun)) \
            or GlobalHydra.instance().is_initialized():
        return
    with user_errors(prog, None):
        jobs = _jobs_to_check(args.overrides) if args.multirun else [args.overrides]
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            for overrides in jobs:
                cfg = compose(args.config_name or config_name, overrides=overrides)
                check_required(cfg)
                check_ranges(cfg)
                if check is not None:
                    check(cfg)


def _jobs_to_check(overrides: list[str]) -> list[list[str]]:
    """The override lists of a multirun that together use every swept value once (the
    first value of every other sweep); [] for a sweep that cannot be listed (``interval``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    values = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            values.append([override.input_line])
            continue
        try:
            swept = list(override.sweep_string_iterator())
        except HydraException:
            return []
        values.append([f"{override.get_key_element()}={value}" for value in swept])
    first = [choices[0] for choices in values if choices]
    jobs = [first]
    for i, choices in enumerate(values):
        jobs += [[*first[:i], value, *first[i + 1:]] for value in choices[1:]]
    return jobs


def hydra_cli(prog: str, config_name: str, check: Callable[[DictConfig], Any] | None = None
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a ``@hydra.main`` function (put it above) into the console script ``prog``:
    :func:`check_command_line` (with the tool's own ``check``) runs first. Called with a
    config, the function runs as is."""
    def wrap(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(hydra_main)
        def main(cfg: DictConfig | None = None) -> Any:
            if cfg is not None:
                return hydra_main(cfg)
            check_command_line(prog, config_name, sys.argv[1:], check)
            return hydra_main()
        return main
    return wrap
