"""Feast objects for every pipeline, generated from the specs in pipelines/ (the one source of truth).

`feast plan` / `feast apply` import this file; ctloop's jobs build the very same objects through
`ctloop.features.store.repo_objects`, so the repo can never drift from what Spark computes.
Locations come from CTLOOP_* (CTLOOP_LAKE_URI for the offline Parquet); unset ones default to the
repository's .state/ and pipelines/, wherever feast is run from.
"""

import os
from pathlib import Path

from ctloop.config.settings import load_settings
from ctloop.features.store import all_repo_objects

_ROOT = Path(__file__).resolve().parents[1]
_defaults = {"state_dir": _ROOT / ".state", "pipelines_dir": _ROOT / "pipelines"}
_settings = load_settings(**{k: v for k, v in _defaults.items() if f"CTLOOP_{k.upper()}" not in os.environ})

# Feast creates the registry file but not its folder: on a fresh clone .state/feast does not exist yet
for _path in (_settings.feast_registry, _settings.feast_sqlite_path):
    if "://" not in _path:
        Path(_path).parent.mkdir(parents=True, exist_ok=True)

for _obj in all_repo_objects(_settings):
    globals()[f"{type(_obj).__name__.lower()}_{_obj.name}"] = _obj
