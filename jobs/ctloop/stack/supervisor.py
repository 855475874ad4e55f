"""``ctloop stack``: the embedded services of the ``local`` runtime, as supervised background processes.

Each service is a process started in its own session (it outlives the CLI), with its pid, start
time and log under ``<state_dir>/stack``. ``up`` is idempotent and waits for each health check;
``down`` stops them (SIGTERM, then SIGKILL) and forgets them. A port held by something that is
not ours is an error, never a silent second instance.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from ctloop.config.settings import Settings
from ctloop.stack.service import Service, StackError, port_in_use
from ctloop.stack.services import services

# Services slower to become healthy than the default allows: the switch is healthy once the champion it
# serves has loaded (TensorFlow, the model from MLflow, Feast) or failed to.
MIN_START_TIMEOUT_S = {"serving-switch": 300.0}


class Stack:
    def __init__(self, settings: Settings, groups: list[str] | None = None) -> None:
        """The services of ``groups`` (default CTLOOP_STACK_SERVICES): ``airflow`` names every airflow-* service."""
        self.settings = settings
        self.dir = settings.state_dir.resolve() / "stack"
        wanted = set(groups if groups is not None else settings.stack_groups)
        self.services = [s for s in services(settings) if s.name.split("-")[0] in wanted]

    # -- bookkeeping --------------------------------------------------------------------------
    def _pid_file(self, service: Service) -> Path:
        return self.dir / f"{service.name}.pid.json"

    def log_file(self, service: Service) -> Path:
        return self.dir / f"{service.name}.log"

    def _process(self, service: Service) -> psutil.Process | None:
        """Our running process for ``service``, or None (a recycled pid is not ours)."""
        path = self._pid_file(service)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        try:
            proc = psutil.Process(record["pid"])
            if abs(proc.create_time() - record["create_time"]) < 1 and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except psutil.Error:
            pass
        path.unlink(missing_ok=True)
        return None

    def _log_tail(self, service: Service, lines: int = 15) -> str:
        log = self.log_file(service)
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    # -- commands -----------------------------------------------------------------------------
    def up(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            proc = self._process(service)
            if proc is None:
                if port_in_use(service.port):
                    raise StackError(
                        f"{service.name}: port {service.port} is already taken by a process ctloop did not start; "
                        f"stop it or choose another port with {service.port_setting or 'the settings'}")
                proc = self._start(service)
            self._wait_healthy(service, proc, max(timeout_s, MIN_START_TIMEOUT_S.get(service.name, 0.0)))
        return self.status()

    def _start(self, service: Service) -> psutil.Process:
        if service.prepare is not None:
            service.prepare()
        with open(self.log_file(service), "ab") as log:
            popen = subprocess.Popen(service.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **service.env}, start_new_session=True, cwd=self.dir)
        proc = psutil.Process(popen.pid)
        self._pid_file(service).write_text(json.dumps({"pid": popen.pid, "create_time": proc.create_time(),
                                                       "port": service.port, "command": service.command}))
        return proc

    def _wait_healthy(self, service: Service, proc: psutil.Process, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                self._pid_file(service).unlink(missing_ok=True)
                raise StackError(f"{service.name} exited during start-up; last lines of {self.log_file(service)}:\n"
                                 f"{self._log_tail(service)}")
            if service.healthy():
                return
            time.sleep(0.3)
        raise StackError(f"{service.name} did not become healthy within {timeout_s:.0f}s; "
                         f"see {self.log_file(service)}:\n{self._log_tail(service)}")

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for service in self.services:
            proc = self._process(service)
            state = "stopped" if proc is None else ("running" if service.healthy() else "unhealthy")
            rows.append({"service": service.name, "state": state, "pid": proc.pid if proc else None,
                         "port": service.port, "url": service.url, "log": str(self.log_file(service))})
        return rows

    def down(self, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        for service in reversed(self.services):
            proc = self._process(service)
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout_s)
            except psutil.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            self._pid_file(service).unlink(missing_ok=True)
        return self.status()
