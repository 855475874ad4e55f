"""The job operator factory: one call turns a ``ctloop`` job command into an Airflow task.

``job_task("features", ["spark", "features", "--pipeline", "fraud", ...], kind="job", settings=s)``

* ``kubernetes`` runtime: a KubernetesPodOperator running ``ctloop --result-file
  /airflow/xcom/return.json <argv>`` in a pod built from the PodTemplate named by
  ``CTLOOP_JOB_POD_TEMPLATE`` or ``CTLOOP_TRAINING_POD_TEMPLATE`` (``k8s/base/jobs/pod-templates.yaml``:
  image, service account ``ctloop-job``, ``envFrom`` the ``ctloop-settings`` ConfigMap, CPU or GPU
  pool, GPU request and toleration, the hardened security context, ``/tmp`` emptyDir); ``kind="deploy"``
  (the blue-green deploy step) uses ``CTLOOP_DEPLOY_POD_TEMPLATE`` (service account ``ctloop-deployer``,
  which may patch the serving Deployments and Service) and gets the serving token Secret. The template
  is read from the cluster when the task runs, never at parse time, so the overlays (dev: small GPU,
  prod: A10G) stay the one place pod sizes live. The job's JSON result becomes the task's XCom.
* ``local`` runtime: the same command as a subprocess of the task (``python -m ctloop.cli``), its
  output streamed into the task log, its JSON result pushed as the XCom, a non-zero exit failing
  the task with the tail of stderr (exit 2, bad input, fails without retries).

DAG files never know which runtime they run in. Nothing heavy is imported at module level: the
Kubernetes provider only when the kubernetes runtime builds a task.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from ctloop.config.settings import Settings

Kind = Literal["job", "training", "deploy"]
XCOM_RESULT = "/airflow/xcom/return.json"  # KubernetesPodOperator's sidecar reads this file
STDERR_TAIL = 40
# The deploy pod's extra environment: the serving token (key CTLOOP_SERVING_TOKEN) for the smoke test's requests.
DEPLOY_SECRETS = ("ctloop-serving-token",)

# Retries and time limits per kind: training is long and expensive, so fewer, later retries.
DEFAULTS: dict[str, dict[str, Any]] = {
    "job": {"retries": 2, "retry_delay": timedelta(minutes=2), "execution_timeout": timedelta(hours=2)},
    "training": {"retries": 1, "retry_delay": timedelta(minutes=10), "execution_timeout": timedelta(hours=8)},
    # a retried deploy resumes: a version already live is watched again, not loaded again
    "deploy": {"retries": 1, "retry_delay": timedelta(minutes=1), "execution_timeout": timedelta(hours=1)},
}


def job_task(task_id: str, command: Sequence[str], *, settings: Settings, kind: Kind = "job",
             **kwargs: Any) -> BaseOperator:
    """The task running ``ctloop <command>`` (templated) in this runtime; its JSON result is the XCom."""
    if kind not in DEFAULTS:
        raise ValueError(f"kind must be one of {', '.join(DEFAULTS)}, got {kind!r}")
    options = {**DEFAULTS[kind], **kwargs}
    if settings.runtime == "kubernetes":
        return pod_task(task_id, list(command), settings=settings, kind=kind, **options)
    return LocalJobOperator(task_id=task_id, command=list(command), **options)


class LocalJobOperator(BaseOperator):
    """``ctloop <command>`` as a subprocess of the task, for the ``local`` runtime."""

    template_fields: Sequence[str] = ("command",)
    ui_color = "#d6eaf8"

    def __init__(self, *, command: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.command = command
        self._proc: subprocess.Popen[str] | None = None

    def execute(self, context: Any) -> Any:
        with tempfile.TemporaryDirectory(prefix="ctloop-job-") as tmp:
            result = Path(tmp) / "result.json"
            argv = [sys.executable, "-m", "ctloop.cli", "--result-file", str(result), *map(str, self.command)]
            self.log.info("running: ctloop %s", " ".join(self.command))
            rc, tail = self._run(argv)
            if rc != 0:
                message = (f"`ctloop {' '.join(self.command)}` exited with {rc}; last lines of stderr:\n"
                           + "\n".join(tail))
                if rc == 2:  # bad input or environment: a retry cannot help
                    from airflow.sdk.exceptions import AirflowFailException

                    raise AirflowFailException(message)
                from airflow.sdk.exceptions import AirflowException

                raise AirflowException(message)
            if not result.exists():
                self.log.warning("the job wrote no result file; pushing no XCom")
                return None
            return json.loads(result.read_text())

    def _run(self, argv: list[str]) -> tuple[int, list[str]]:
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                      text=True, errors="replace", env=env, bufsize=1)

        def pump(stream: Any, name: str) -> None:
            for line in stream:
                line = line.rstrip("\n")
                self.log.info("[%s] %s", name, line)
                if name == "stderr":
                    tail.append(line)

        pumps = [threading.Thread(target=pump, args=(self._proc.stdout, "stdout"), daemon=True),
                 threading.Thread(target=pump, args=(self._proc.stderr, "stderr"), daemon=True)]
        for t in pumps:
            t.start()
        rc = self._proc.wait()
        for t in pumps:
            t.join(10)
        return rc, list(tail)

    def on_kill(self) -> None:
        """Stop the job and its children (Spark's JVM) when the task is killed or times out."""
        if self._proc is None or self._proc.poll() is not None:
            return
        import psutil

        try:
            children = psutil.Process(self._proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        for proc in [psutil.Process(self._proc.pid), *children]:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(children, timeout=10)
        for proc in alive:
            proc.kill()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


def pod_task(task_id: str, command: list[str], *, settings: Settings, kind: Kind, **kwargs: Any) -> BaseOperator:
    """A KubernetesPodOperator for the ``kubernetes`` runtime (the provider is imported only here)."""
    from kubernetes.client import models as k8s

    from ctloop_airflow.pod import PodTemplateJobOperator

    template = {"training": settings.training_pod_template,
                "deploy": settings.deploy_pod_template}.get(kind, settings.job_pod_template)
    secrets = [s.strip() for s in settings.job_secrets.split(",") if s.strip()]
    if kind == "deploy":
        secrets += [s for s in DEPLOY_SECRETS if s not in secrets]
    return PodTemplateJobOperator(
        task_id=task_id,
        pod_template_name=template,
        namespace=settings.k8s_namespace,
        image=settings.job_image or None,  # None: the template's image
        cmds=["ctloop"],
        arguments=["--result-file", XCOM_RESULT, *command],
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=s)) for s in secrets],
        labels={"app.kubernetes.io/part-of": "ctloop", "ctloop.io/kind": kind},
        do_xcom_push=True,
        # the sidecar that reads the result gets the same hardening as the job container
        xcom_sidecar_container_security_context={
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        startup_timeout_seconds=settings.job_startup_timeout_s,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",  # failed pods stay for a look
        **kwargs,
    )
