"""Run one DAG with ``dag.test()`` and print what happened as one JSON line (used by tests/dags)."""

from __future__ import annotations

import json
import sys


def main(dag_id: str, conf: dict, logical_date: str | None = None) -> None:
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    bag = DagBag(settings.DAGS_FOLDER)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    if logical_date:  # the run's data interval is the schedule's period before it, as for a scheduled run
        from datetime import datetime

        run = dag.test(run_conf=conf, logical_date=datetime.fromisoformat(logical_date))
    else:
        run = dag.test(run_conf=conf)
    session = settings.Session()
    run = session.merge(run)
    tasks = {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
             for ti in run.get_task_instances(session=session)}
    xcoms: dict[str, dict] = {}
    for row in session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run.run_id)):
        xcoms.setdefault(row.task_id, {})[row.key] = XComModel.deserialize_value(row)
    events = [{"uri": uri, "extra": extra} for uri, extra in session.execute(
        select(AssetModel.uri, AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run.run_id))]
    print("CTLOOP-RESULT " + json.dumps({"state": str(run.state), "run_id": run.run_id, "tasks": tasks,
                                         "xcoms": xcoms, "note": run.note, "events": events}, default=str))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:4])
