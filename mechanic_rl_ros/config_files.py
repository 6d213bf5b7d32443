"""YAML configuration files: load, merge, and ``dotted.key=value`` overrides.

Every tool that reads a config file (``pretrain``, ``train-rl``, the learner
node) uses these functions, so an override means the same everywhere. A
*spec* (:func:`split_spec`) is one string that names a file and overrides
on top of it, as a launch argument carries them: ``world:=`` and
``distill_config:=`` take one.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping


def load_yaml(path: str | Path, what: str = "settings file") -> dict[str, Any]:
    """The mapping in a YAML settings file ({} for an empty one). Every settings file of the project is
    ``key: value`` lines, so a file that cannot be read (missing, unreadable, not UTF-8), text that is not
    YAML, or a top level that is not a mapping raises ValueError naming ``what``, the file and the cause."""
    import yaml

    where = f"{what} {str(path)!r}"
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{where}: cannot be read ({type(exc).__name__}: {why})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a {type(data).__name__} at the top level; expected a mapping of keys to "
                         f"values (key: value lines)")
    return data


def deep_update(base: dict[str, Any], upd: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``upd`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; values are parsed as YAML (``3e-4``, ``[64,128]``, ``null``)."""
    import yaml

    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = cfg
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        value = yaml.safe_load(raw)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node[parts[-1]] = value
    return cfg


def spec_items(spec: str, what: str) -> list[str]:
    """The items of a spec: split at spaces outside brackets, so ``train_params=[encoders, unet.up]`` stays
    one item. ValueError naming ``what`` for unbalanced brackets."""
    items, depth, cur = [], 0, ""
    for ch in str(spec or "").strip():
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch.isspace() and depth <= 0:
            if cur:
                items.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ValueError(f"{what} {spec!r}: unbalanced brackets")
    if cur:
        items.append(cur)
    return items


def split_spec(spec: str | None, what: str) -> tuple[str | None, dict[str, Any]]:
    """(the first item when it is not an override, else None; the ``key=value`` overrides) of a spec such as
    ``"distill_augmented.yaml augment_warp=0.5 offline_steps=500"``. Values are parsed as YAML (``0.5``,
    ``[encoders, unet.up]``, ``true``); the caller resolves the first item (a preset name or a file) and
    checks the keys. ValueError naming ``what`` and the item for an item it cannot read."""
    import yaml

    base: str | None = None
    overrides: dict[str, Any] = {}
    for i, item in enumerate(spec_items(spec or "", what)):
        if "=" in item:
            key, raw = item.split("=", 1)
            try:
                overrides[key.strip()] = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ValueError(f"{what} override {item!r}: the value is not valid YAML") from None
        elif i == 0:
            base = item
        else:
            raise ValueError(f"{what} {spec!r}: {item!r} is neither the first item (a preset or a file) nor a "
                             "key=value override")
    return base, overrides
