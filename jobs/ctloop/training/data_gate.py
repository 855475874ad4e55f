"""``ctloop quality``: the Great Expectations gate a training-set snapshot passes before training.

The suite is derived from the spec (one source of truth): what the schema, the feature definitions
and the ``quality`` section say must hold. A failed check is a decision, not a crash: the command
reports ``passed: false`` with the reasons and the training DAG stops there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ctloop.config.spec import PipelineSpec
from ctloop.lake.store import Lake
from ctloop.training.training_set import load_snapshot


def expectations(spec: PipelineSpec) -> list[Any]:
    import great_expectations as gx

    e = gx.expectations
    q = spec.quality
    primary = spec.events[spec.primary]
    target = spec.labels.target
    suite = [
        e.ExpectTableRowCountToBeBetween(min_value=q.min_rows),
        e.ExpectColumnValuesToBeUnique(column=primary.id_field),
        e.ExpectColumnValuesToBeInSet(column=target, value_set=[0, 1]),
        e.ExpectColumnMeanToBeBetween(column=target, min_value=q.label_rate_min, max_value=q.label_rate_max),
    ]
    views = spec.features.views.values() if spec.features else []
    aggregations = {a.name: a for view in views for a in view.aggregations}
    for name in spec.feature_columns:
        suite.append(e.ExpectColumnValuesToNotBeNull(column=name, mostly=round(1 - q.max_missing_fraction, 6)))
        agg = aggregations.get(name)
        source_min = primary.fields[agg.column].min if agg is not None and agg.column in primary.fields else None
        if agg is not None and agg.function == "label_rate":
            suite.append(e.ExpectColumnValuesToBeBetween(column=name, min_value=0, max_value=1))
        elif agg is not None and (agg.function in ("count", "count_distinct")
                                  or (source_min is not None and source_min >= 0)):
            suite.append(e.ExpectColumnValuesToBeBetween(column=name, min_value=0))
    for name in spec.model.request_fields:
        field = primary.fields[name]
        if field.allowed:
            suite.append(e.ExpectColumnValuesToBeInSet(column=name, value_set=list(field.allowed)))
        elif field.min is not None or field.max is not None:
            suite.append(e.ExpectColumnValuesToBeBetween(column=name, min_value=field.min, max_value=field.max))
    return suite


class Suites:
    """Great Expectations suites run on pandas frames in one ephemeral context (nothing written to disk) that
    can render their Data Docs: shared by the training-set gate and the monitor's landed-data checks."""

    def __init__(self, name: str) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._source = self._context.data_sources.add_pandas(name)

    def validate(self, asset: str, suite_name: str, expectations: list[Any], frame: Any, run_name: str) -> Any:
        """The suite's validation result on ``frame`` (named ``asset`` in the Data Docs); failed expectations
        are results, never exceptions."""
        gx = self._gx
        batch = self._source.add_dataframe_asset(asset).add_batch_definition_whole_dataframe(suite_name)
        suite = self._context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
        validation = self._context.validation_definitions.add(
            gx.ValidationDefinition(name=run_name, data=batch, suite=suite))
        from great_expectations.core.run_identifier import RunIdentifier

        return validation.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))

    def data_docs(self, directory: Path) -> Path:
        """Render the Data Docs of every validation run so far into ``directory``; the path of its index.html."""
        self._context.add_data_docs_site("ctloop", {
            "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(directory)}})
        self._context.build_data_docs(site_names=["ctloop"])
        return directory / "index.html"


def failures(result: Any) -> list[dict[str, Any]]:
    """The failed expectations of a validation result: what was expected, of which column, and what was seen."""
    found = []
    for r in result.results:
        if r.success:
            continue
        config = r.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
        shown = {"partial_unexpected_list": lambda v: v[:5], "unexpected_percent": lambda v: round(v, 2)}
        observed = {k: shown.get(k, lambda v: v)(v) for k, v in r.result.items()
                    if k in ("observed_value", "unexpected_count", "unexpected_percent", "partial_unexpected_list")
                    and v not in (None, [])}
        if r.exception_info and r.exception_info.get("raised_exception"):
            observed["error"] = r.exception_info.get("exception_message")
        found.append({"expectation": config.type, "column": config.kwargs.get("column"), "kwargs": kwargs,
                      "observed": observed})
    return found


def describe(failure: dict[str, Any]) -> str:
    """One failed expectation in a line, as the run note and the command's reasons show it."""
    args = ({"column": failure["column"]} if failure["column"] else {}) | failure["kwargs"]
    return f"{failure['expectation']}({', '.join(f'{k}={v}' for k, v in args.items())}): {failure['observed']}"


def check_snapshot(spec: PipelineSpec, lake: Lake, snapshot_id: str) -> dict[str, Any]:
    manifest, frame = load_snapshot(lake, spec, snapshot_id)
    result = Suites("training_sets").validate(spec.name, f"{spec.name}_training_set", expectations(spec), frame,
                                              snapshot_id)
    failed = [describe(f) for f in failures(result)]
    print(f"[quality] snapshot {snapshot_id}: {len(result.results) - len(failed)}/{len(result.results)} expectations "
          f"met" + (f"; failed: {'; '.join(failed)}" if failed else ""), file=sys.stderr, flush=True)
    return {"snapshot_id": snapshot_id, "passed": bool(result.success), "rows": manifest["row_count"],
            "expectations": len(result.results), "failed": len(failed),
            "reasons": failed or [f"all {len(result.results)} expectations met"]}
