"""``ctloop quality``: the Great Expectations gate a training-set snapshot passes before training.

The suite is derived from the spec (one source of truth): what the schema, the feature definitions
and the ``quality`` section say must hold. A failed check is a decision, not a crash: the command
reports ``passed: false`` with the reasons and the training DAG stops there.
"""

from __future__ import annotations

import os
import sys
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


def _describe(result: Any) -> str:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    observed = {k: v for k, v in result.result.items()
                if k in ("observed_value", "unexpected_count", "unexpected_percent", "partial_unexpected_list")
                and v not in (None, [])}
    return f"{config.type}({', '.join(f'{k}={v}' for k, v in kwargs.items())}): {observed}"


def check_snapshot(spec: PipelineSpec, lake: Lake, snapshot_id: str) -> dict[str, Any]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    manifest, frame = load_snapshot(lake, spec, snapshot_id)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("training_sets").add_dataframe_asset(spec.name)
             .add_batch_definition_whole_dataframe("snapshot"))
    suite = context.suites.add(gx.ExpectationSuite(name=f"{spec.name}_training_set", expectations=expectations(spec)))
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=snapshot_id, data=batch, suite=suite))
    result = validation.run(batch_parameters={"dataframe": frame})
    failed = [_describe(r) for r in result.results if not r.success]
    print(f"[quality] snapshot {snapshot_id}: {len(result.results) - len(failed)}/{len(result.results)} expectations "
          f"met" + (f"; failed: {'; '.join(failed)}" if failed else ""), file=sys.stderr, flush=True)
    return {"snapshot_id": snapshot_id, "passed": bool(result.success), "rows": manifest["row_count"],
            "expectations": len(result.results), "failed": len(failed),
            "reasons": failed or [f"all {len(result.results)} expectations met"]}
