"""KubernetesPodOperator whose base pod is a PodTemplate read by name when the task runs.

Imported only by the ``kubernetes`` runtime (the provider and the Kubernetes client are not light).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s


class PodTemplateJobOperator(KubernetesPodOperator):
    """The operator's own fields (command, labels, env_from, image when set) go on top of the template."""

    def __init__(self, *, pod_template_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pod_template_name = pod_template_name

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        if self.full_pod_spec is None:
            self.full_pod_spec = self.read_pod_template()
        return super().build_pod_request_obj(context, dry_run=dry_run)

    def read_pod_template(self) -> k8s.V1Pod:
        """GET the PodTemplate (RBAC: k8s/base/rbac/airflow.yaml allows exactly these names)."""
        template = self.hook.core_v1_client.read_namespaced_pod_template(self.pod_template_name, self.namespace)
        meta = template.template.metadata or k8s.V1ObjectMeta()
        return k8s.V1Pod(metadata=k8s.V1ObjectMeta(labels=meta.labels, annotations=meta.annotations),
                         spec=template.template.spec)
