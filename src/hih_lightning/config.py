"""Hydra/OmegaConf glue shared by every entry point and by the tests."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from hih_lightning.errors import ConfigError  # defined there, importable from here as before

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"

if not OmegaConf.has_resolver("div"):
    # heatmap size = input size / stride, written once in the model config
    OmegaConf.register_new_resolver("div", lambda a, b: int(a) // int(b))


def instantiate_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that names the config key when construction fails."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    node = OmegaConf.select(cfg, key)
    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, TypeError, ValueError, KeyError) as err:
        # Hydra wraps the constructor's own error in a traceback-like text: name that one
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ \
            else err
        if isinstance(cause, OSError):  # a missing or unreadable data file: its own message
            raise cause from None
        raise ConfigError(f"config key '{key}' could not be built: {cause}") from err


def find_last_checkpoint(log_dir: str | Path, task: str = "train") -> Path:
    """The newest ``last.ckpt`` of any run under ``log_dir`` (``ckpt_path=last``)."""
    candidates = sorted(Path(log_dir).glob(f"{task}/**/checkpoints/last.ckpt"),
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"ckpt_path=last: no last.ckpt found under {Path(log_dir) / task}")
    return candidates[-1]


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    value = cfg.get("ckpt_path")
    if value in (None, ""):
        return None
    if value == "last":
        return str(find_last_checkpoint(cfg.paths.log_dir, "train"))
    if not Path(value).is_file():
        raise ConfigError(f"ckpt_path={value!r}: no such checkpoint file")
    return str(value)


# -- validation -----------------------------------------------------------------------------
# The constructors' signatures and type hints ARE the schema: every `_target_` node is checked
# against them before anything is built, so a misspelt `+key=` or a wrong value fails at start
# with the full key, not when the object happens to be built (or, for a DataModule, mid-run).
_VALIDATED_ROOTS = ("data", "model", "trainer", "callbacks", "logger")


# values whose valid range no type hint says: key -> (the range as told to the user, check)
VALUE_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "data.batch_size": (">= 1", lambda v: v >= 1),
    "data.eval_batch_size": (">= 1", lambda v: v >= 1),
    "data.num_workers": (">= 0", lambda v: v >= 0),
    "trainer.max_epochs": (">= 1, or -1 for no limit", lambda v: v >= 1 or v == -1),
    "model.optimizer.lr": ("> 0", lambda v: v > 0),
    "model.codec.window": (">= 0", lambda v: v >= 0),
    "batch_size": (">= 1", lambda v: v >= 1),  # hih-predict
    # hih-export: torch's exporter takes any opset and silently exports at 18 instead
    "opset": (">= 1", lambda v: v >= 1),
    "check_images": (">= 1", lambda v: v >= 1),
    "tolerance": (">= 0", lambda v: v >= 0),
}


def check_ranges(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value of :data:`VALUE_RANGES` out of range
    (keys a config does not have, and values that are not numbers, are left alone)."""
    for key, (valid, ok) in VALUE_RANGES.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        except Exception:  # noqa: BLE001 - an unresolvable parent: nothing to check here
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not ok(value):
            raise ConfigError(f"config key '{key}': {value!r} is out of range (valid: {valid})")


def check_required(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first key left ``???``, a value only the user can
    give (hih-predict's ``input``): said before a run folder is made, not as OmegaConf's
    traceback when the job first reads it."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        OmegaConf.to_container(cfg, resolve=False, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key}: a value is required ({err.full_key}=...)") from None


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first unknown key, ill-typed value or value out
    of range."""
    check_ranges(cfg)
    for root in _VALIDATED_ROOTS:
        node = cfg.get(root)
        if isinstance(node, DictConfig):
            _validate_node(node, root)


def _validate_node(node: DictConfig | ListConfig, path: str) -> None:
    # lists are walked too: data.augment.photometric holds one `_target_` node per item
    if isinstance(node, ListConfig):
        children = {f"{path}[{i}]": node._get_node(i) for i in range(len(node))}
    else:
        if "_target_" in node:
            _validate_target(node, path)
        children = {f"{path}.{key}": node._get_node(key) for key in node}
    for full, child in children.items():
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
            _validate_node(child, full)


def _validate_target(node: DictConfig, path: str) -> None:
    from hydra.utils import get_object

    target = node["_target_"]
    try:
        obj = get_object(target)
    except Exception as err:  # noqa: BLE001 - hydra raises several types here
        raise ConfigError(f"config key '{path}._target_': cannot import {target!r}: {err}") from err
    params, open_kwargs, hints = _signature(obj)
    for key in node:
        if str(key).startswith("_"):
            continue
        full = f"{path}.{key}"
        if key not in params:
            if open_kwargs:
                continue
            valid = ", ".join(sorted(params))
            raise ConfigError(f"config key '{full}': {target} has no parameter {key!r} "
                              f"(valid: {valid})")
        if key in hints:
            try:
                value = OmegaConf.to_object(node[key]) if OmegaConf.is_config(node[key]) \
                    else node[key]
            except Exception:  # noqa: BLE001 - unresolvable here (e.g. ${hydra:...}); skip
                continue
            if not _matches(value, hints[key]):
                raise ConfigError(f"config key '{full}': {value!r} is not a valid "
                                  f"{_describe(hints[key])} for {target}")


def _signature(obj: Any) -> tuple[set[str], bool, dict[str, Any]]:
    """Accepted keyword names, whether arbitrary ones pass, and type hints of our own code.

    A class of this package whose ``__init__`` takes ``**kwargs`` forwards them to its base,
    so the base's parameters are accepted too; a function of ours names where its ``**kwargs``
    go in ``forwards_kwargs_to``; third-party ``**kwargs`` accept anything.
    """
    params: set[str] = set()
    hints: dict[str, Any] = {}
    chain = [c for c in getattr(obj, "__mro__", ()) if "__init__" in vars(c)] or [obj]
    if hasattr(obj, "forwards_kwargs_to"):
        chain.append(obj.forwards_kwargs_to)
    for owner in chain:
        func = owner.__init__ if isinstance(owner, type) else owner
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return params, True, hints
        ours = getattr(owner, "__module__", "").startswith("hih_lightning")
        if ours:
            try:
                hints = {**typing.get_type_hints(func), **hints}
            except Exception:  # noqa: BLE001 - unresolvable hints: check names only
                pass
        params |= {n for n, p in sig.parameters.items()
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return params, False, hints
        if not ours:
            return params, True, hints
    return params, True, hints


def _matches(value: Any, hint: Any) -> bool:
    """isinstance for the hint shapes our constructors use; anything else passes."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    return True  # containers, modules, callables: checked by the constructor itself


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "value, one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return f"value of type {getattr(hint, '__name__', hint)}"
