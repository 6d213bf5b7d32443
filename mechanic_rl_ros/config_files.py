"""YAML configuration files: load, merge, and ``dotted.key=value`` overrides.

Every tool that reads a config file (``pretrain``, ``train-rl``, the learner
node) uses these three functions, so an override means the same everywhere.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}


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
