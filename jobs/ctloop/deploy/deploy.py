"""``ctloop deploy`` and ``ctloop rollback``: blue-green, smoke-tested, watched, and rolled back on a breach.

The deploy of version N, step by step (each step a record in the lake, ``deploy.records``):

1. ``started``: the live slot and its version, the champion; the other slot is the idle one.
   N already live and champion: nothing to do (``unchanged``). N live but not champion (a deploy
   that died during its watch, retried): the watch resumes.
2. golden requests from N's holdout with N's own pyfunc scores (``deploy.golden``); none: ``refused``.
3. ``loaded``: N into the idle slot (a process under the local switch, or the idle Deployment's
   ``--version``), then its readiness (``deploy.ready_timeout``); not ready: ``refused``.
4. ``smoke``: the golden requests straight to the idle slot; a wrong score, a failed request or a
   p99 over budget: ``refused``. A refused candidate never gets traffic, the champion stays, and
   the idle slot is stopped (local) or put back to its previous version (kubernetes).
5. ``switched``: traffic moves to the idle slot in one step (compare-and-swap on the live slot);
   the alias ``live`` follows (a recorded move), so the registry's history shows every switch.
6. ``watch``: for ``deploy.watch``, the new slot's error rate and p99 since the switch and over
   the last ``RECENT_S`` seconds, each judged once it has ``min_watch_requests`` requests; with too
   few requests at the end the window is extended once, then it holds without a verdict (said so).
   A breach: ``rolled_back``: traffic back to the old slot (still warm), ``live`` back, with the
   reason; the champion never moved. No old slot (a first deploy): ``breached``, it stays live
   but does not become champion.
7. ``promoted``: the window held; ``champion`` moves to N with the watch's figures as its reason,
   and the old slot is retired after ``deploy.keep_old`` (kept warm for a fast rollback until then).

``ctloop rollback`` goes back to the previous version: at once when the old slot is still warm,
else it loads the last known good champion into the idle slot, smoke-tests it and switches; both
``live`` and ``champion`` move back, with the reason.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from typing import Any, Protocol

from ctloop.config.settings import Settings
from ctloop.config.spec import PipelineSpec, duration_seconds
from ctloop.deploy.golden import GoldenError, golden_requests, smoke_test
from ctloop.deploy.local import BackendError, LocalBackend
from ctloop.deploy.records import DeployRecord
from ctloop.lake.store import Lake
from ctloop.registry.aliases import client, current_version, last_known_good, move_alias

LIVE_ALIAS = "live"
RECENT_S = 5.0


class Backend(Protocol):
    runtime: str

    def live_url(self) -> str: ...
    def state(self) -> dict[str, Any]: ...
    def acquire(self, owner: str, ttl_s: float) -> None: ...
    def release(self) -> None: ...
    def load(self, slot: str, version: str) -> None: ...
    def wait_ready(self, slot: str, timeout_s: float) -> None: ...
    def slot_url(self, slot: str) -> str: ...
    def switch(self, to: str, expect: str | None) -> dict[str, Any]: ...
    def stats(self, slot: str, since: float, until: float | None = None) -> dict[str, Any]: ...
    def retire(self, slot: str, after_s: float) -> None: ...
    def stop(self, slot: str) -> None: ...
    def close(self) -> None: ...


def backend_for(spec: PipelineSpec, settings: Settings, token: str) -> Backend:
    if settings.runtime == "kubernetes":
        from ctloop.deploy.kube import KubernetesBackend

        return KubernetesBackend(settings, spec.name, token)
    return LocalBackend(settings, spec.name, token)


def _log(message: str) -> None:
    print(f"[deploy] {message}", file=sys.stderr, flush=True)


def _other(slot: str | None) -> str:
    return "green" if slot == "blue" else "blue"


def _owner() -> str:
    run = os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    return f"airflow:{run}" if run else f"{socket.gethostname()}:{os.getpid()}"


def _token(settings: Settings) -> str:
    from ctloop.serving.auth import load_token

    return load_token(settings)


class Deploy:
    """One deploy or rollback of one pipeline: the backend, the record, the registry."""

    def __init__(self, spec: PipelineSpec, settings: Settings, lake: Lake, *, backend: Backend | None = None,
                 sleep: Any = time.sleep) -> None:
        self.spec, self.settings, self.lake = spec, settings, lake
        self.token = _token(settings)
        self.backend = backend or backend_for(spec, settings, self.token)
        self.model = spec.registered_model
        self.registry = client(settings)
        self.sleep = sleep
        self.poll_s = getattr(self.backend, "poll_s", 0.25)  # kubernetes: each poll scrapes the slot's pods

    # -- the deploy ---------------------------------------------------------------------------
    def deploy(self, version: str, *, reason: str = "") -> dict[str, Any]:
        version = str(self.registry.get_model_version(self.model, str(version)).version)  # it exists
        d = self.spec.deploy
        ttl = 2 * duration_seconds(d.watch) + duration_seconds(d.ready_timeout) + 600
        self.backend.acquire(_owner(), ttl)
        try:
            return self._deploy(version, reason)
        finally:
            self.backend.release()
            self.backend.close()

    def _deploy(self, version: str, reason: str) -> dict[str, Any]:
        state = self._state()
        live = state["live"]
        live_version = state["slots"][live]["version"] if live else None
        champion = current_version(self.registry, self.model, "champion")
        record = DeployRecord(self.lake, self.spec.name, version)
        base = {"pipeline": self.spec.name, "model": self.model, "version": version, "runtime": self.backend.runtime,
                "url": self.backend.live_url(), "record": record.url}
        record.step("started", reason or "deploy requested", live_slot=live, live_version=live_version,
                    champion=champion, runtime=self.backend.runtime, deploy=self.spec.deploy.model_dump())
        if live_version == version:
            if champion == version:
                why = f"v{version} is already live in {live} and champion: nothing to do"
                record.step("unchanged", why)
                _log(why)
                return {**base, "outcome": "unchanged", "reason": why, "switched": False, "live_slot": live,
                        "champion": champion, "steps": record.steps}
            _log(f"v{version} is live in {live} but not champion: resuming its watch")
            since = state.get("switched_at") or time.time()
            other = state["slots"][_other(live)]
            warm = other["state"] == "warm" and other["version"] is not None
            return self._watch_and_settle(record, base, version, slot=live, old=_other(live) if warm else None,
                                          old_version=str(other["version"]) if warm else champion, since=since)
        idle = _other(live)
        _log(f"{self.model} v{version} into the idle slot {idle} (live: {live or 'none'}"
             f"{' v' + live_version if live_version else ''})")
        try:
            golden = golden_requests(self.spec, self.settings, self.lake, version)
        except GoldenError as exc:
            return self._refuse(record, base, version, None, str(exc))
        self.backend.load(idle, version)
        record.step("loaded", f"v{version} loading into {idle}", slot=idle)
        try:
            self.backend.wait_ready(idle, duration_seconds(self.spec.deploy.ready_timeout))
        except BackendError as exc:
            return self._refuse(record, base, version, idle, f"slot {idle} did not become ready: {exc}")
        smoke = smoke_test(self.spec, golden, self.backend.slot_url(idle), self.token, version)
        record.step("smoke", "passed" if smoke["passed"] else "; ".join(smoke["reasons"]), slot=idle, **smoke)
        _log(f"smoke test of {idle}: {'passed' if smoke['passed'] else 'FAILED'} ({smoke['requests']} golden "
             f"requests, max score diff {smoke['max_score_diff']:.2e}, p99 {smoke['p99_ms']} ms)")
        if not smoke["passed"]:
            return self._refuse(record, base, version, idle, "smoke test failed: " + "; ".join(smoke["reasons"]),
                                smoke=smoke)
        switched = self.backend.switch(idle, expect=live)
        since = float(switched.get("at") or time.time())
        why = (f"switched {live or 'nothing'} -> {idle} after its smoke test ({smoke['requests']} golden requests, "
               f"max score diff {smoke['max_score_diff']:.1e}, p99 {smoke['p99_ms']} ms)")
        record.step("switched", why, slot=idle, previous_slot=live, previous_version=live_version)
        move_alias(self.settings, self.model, LIVE_ALIAS, version, f"deploy: {why}")
        _log(why)
        return self._watch_and_settle(record, {**base, "smoke": smoke}, version, slot=idle, old=live,
                                      old_version=live_version, since=since)

    def _state(self) -> dict[str, Any]:
        """The backend's state, a slot serving an alias (``--alias champion``, as installed) resolved to its version."""
        state = self.backend.state()
        for slot in state["slots"].values():
            if str(slot.get("version") or "").startswith("@"):
                slot["version"] = current_version(self.registry, self.model, slot["version"][1:])
        return state

    def _refuse(self, record: DeployRecord, base: dict[str, Any], version: str, slot: str | None, why: str,
                **extra: Any) -> dict[str, Any]:
        if slot is not None:
            try:
                self.backend.stop(slot)
            except BackendError as exc:
                _log(f"could not stop {slot}: {exc}")
        record.step("refused", why, slot=slot)
        self.registry.set_model_version_tag(self.model, version, "ctloop.deploy", f"refused: {why}"[:5000])
        _log(f"REFUSED v{version}: {why}; nothing switched, the champion stays")
        state = self.backend.state()
        return {**base, **extra, "outcome": "refused", "reason": why, "switched": False, "live_slot": state["live"],
                "champion": current_version(self.registry, self.model, "champion"), "steps": record.steps}

    def _watch_and_settle(self, record: DeployRecord, base: dict[str, Any], version: str, *, slot: str,
                          old: str | None, old_version: str | None, since: float) -> dict[str, Any]:
        verdict = self.watch(slot, since)
        record.step("watched", verdict["reason"], slot=slot, **{k: v for k, v in verdict.items() if k != "reason"})
        if not verdict["held"]:
            if old is not None and old_version is not None:
                self.backend.switch(old, expect=slot)
                why = f"rollback: {verdict['reason']}"
                record.step("rolled_back", why, slot=old, version=old_version, breached_at=verdict["at"],
                            rolled_back_at=time.time())
                move_alias(self.settings, self.model, LIVE_ALIAS, old_version, why)
                self.registry.set_model_version_tag(self.model, version, "ctloop.deploy", why[:5000])
                self.backend.retire(slot, 0)
                _log(f"ROLLED BACK v{version} -> v{old_version} ({old}): {verdict['reason']}")
                return {**base, "outcome": "rolled_back", "reason": why, "switched": True, "live_slot": old,
                        "watch": verdict, "champion": current_version(self.registry, self.model, "champion"),
                        "steps": record.steps}
            why = f"breach with no previous slot to roll back to (v{version} stays live, not champion): " \
                  f"{verdict['reason']}"
            record.step("breached", why, slot=slot)
            self.registry.set_model_version_tag(self.model, version, "ctloop.deploy", why[:5000])
            _log(why)
            return {**base, "outcome": "breached", "reason": why, "switched": True, "live_slot": slot,
                    "watch": verdict, "champion": current_version(self.registry, self.model, "champion"),
                    "steps": record.steps}
        why = f"held its watch window: {verdict['reason']}"
        move_alias(self.settings, self.model, "champion", version, why)
        self.registry.set_model_version_tag(self.model, version, "ctloop.deploy", f"promoted: {why}"[:5000])
        keep = duration_seconds(self.spec.deploy.keep_old)
        if old is not None:
            self.backend.retire(old, keep)
        record.step("promoted", why, slot=slot, champion=version, previous_champion=old_version,
                    old_slot=old, old_slot_retires_in_s=keep if old else None)
        _log(f"v{version} is champion ({why})")
        return {**base, "outcome": "promoted", "reason": why, "switched": True, "live_slot": slot, "champion": version,
                "previous": {"slot": old, "version": old_version}, "watch": verdict, "steps": record.steps}

    def watch(self, slot: str, since: float) -> dict[str, Any]:
        return watch(self.backend, slot, self.spec.deploy, since, poll_s=self.poll_s, sleep=self.sleep)

    # -- rollback -----------------------------------------------------------------------------
    def rollback(self, reason: str) -> dict[str, Any]:
        self.backend.acquire(_owner(), duration_seconds(self.spec.deploy.ready_timeout) + 600)
        try:
            return self._rollback(reason)
        finally:
            self.backend.release()
            self.backend.close()

    def _rollback(self, reason: str) -> dict[str, Any]:
        state = self._state()
        live = state["live"]
        if live is None:
            raise ValueError(f"{self.spec.name}: nothing is live, so there is nothing to roll back")
        live_version = state["slots"][live]["version"]
        other = _other(live)
        warm = state["slots"][other]
        champion = current_version(self.registry, self.model, "champion")
        if warm["state"] == "warm" and warm["version"] and str(warm["version"]).isdigit():
            target = str(warm["version"])
        else:
            target = last_known_good(self.settings, self.model)
            if champion and champion != live_version:
                target = champion  # live is an unpromoted candidate: back to the champion
        if not target or target == live_version:
            raise ValueError(f"{self.spec.name}: no earlier version to roll back to (live v{live_version}, "
                             f"champion v{champion}, no last known good)")
        record = DeployRecord(self.lake, self.spec.name, target, action="rollback")
        base = {"pipeline": self.spec.name, "model": self.model, "version": target, "runtime": self.backend.runtime,
                "url": self.backend.live_url(), "record": record.url}
        why = f"rollback: {reason}"
        record.step("started", why, live_slot=live, live_version=live_version, champion=champion, target=target)
        if not (warm["state"] == "warm" and str(warm["version"]) == target):
            _log(f"v{target} is not warm: loading it into {other}")
            golden = golden_requests(self.spec, self.settings, self.lake, target)
            self.backend.load(other, target)
            record.step("loaded", f"v{target} loading into {other}", slot=other)
            self.backend.wait_ready(other, duration_seconds(self.spec.deploy.ready_timeout))
            smoke = smoke_test(self.spec, golden, self.backend.slot_url(other), self.token, target)
            record.step("smoke", "passed" if smoke["passed"] else "; ".join(smoke["reasons"]), slot=other, **smoke)
            if not smoke["passed"]:
                self.backend.stop(other)
                record.step("refused", "smoke test failed: " + "; ".join(smoke["reasons"]), slot=other)
                raise BackendError(f"rollback to v{target} refused: its smoke test failed: {smoke['reasons']}")
        self.backend.switch(other, expect=live)
        record.step("switched", why, slot=other, previous_slot=live, previous_version=live_version)
        move_alias(self.settings, self.model, LIVE_ALIAS, target, why)
        if champion != target:
            move_alias(self.settings, self.model, "champion", target, why)
        self.backend.retire(live, duration_seconds(self.spec.deploy.keep_old))
        record.step("rolled_back", why, slot=other, version=target, champion=target)
        _log(f"rolled back {live} v{live_version} -> {other} v{target}: {reason}")
        return {**base, "outcome": "rolled_back", "reason": why, "switched": True, "live_slot": other,
                "previous": {"slot": live, "version": live_version}, "champion": target, "steps": record.steps}


def watch(backend: Backend, slot: str, d: Any, since: float, *, poll_s: float = 0.25, sleep: Any = time.sleep,
          clock: Any = time.time) -> dict[str, Any]:
    """Watch ``slot`` from ``since`` for ``d.watch`` (a ``DeploySpec``): the verdict, with its figures.

    Judged at every poll, over the requests since the switch and over the last ``RECENT_S`` seconds,
    each only once it has ``d.min_watch_requests``: a breach ends the watch at once. At the end of the
    window, too few requests extend it once; after that it holds, saying there was no verdict."""
    window = duration_seconds(d.watch)
    deadline, extended = since + window, False
    while True:
        now = clock()
        total = backend.stats(slot, since=since)
        recent = backend.stats(slot, since=max(since, now - RECENT_S))
        breach = _breach(d, total, "since the switch") or _breach(d, recent, f"in the last {RECENT_S:.0f}s")
        figures = {"requests": total["requests"], "errors": total["errors"], "error_rate": total["error_rate"],
                   "p99_ms": _finite(total.get("p99_ms")), "window_s": window, "extended": extended,
                   "since": since, "at": now}
        if breach:
            _log(f"watch of {slot}: BREACH {breach}")
            return {"held": False, "reason": breach, **figures}
        if now >= deadline:
            if total["requests"] < d.min_watch_requests and not extended:
                _log(f"watch of {slot}: {total['requests']} requests < min_watch_requests {d.min_watch_requests}: "
                     "the window is extended once")
                deadline, extended = now + window, True
                continue
            if total["requests"] < d.min_watch_requests:
                reason = (f"only {total['requests']} requests in {now - since:.0f}s (min_watch_requests "
                          f"{d.min_watch_requests}): no breach seen, no verdict on error rate or latency")
            else:
                reason = (f"{total['requests']} requests in {now - since:.0f}s, error rate "
                          f"{(total['error_rate'] or 0):.4f} <= {d.max_error_rate}, p99 "
                          f"{_finite(total.get('p99_ms'))} ms <= {d.max_p99_ms}")
            return {"held": True, "reason": reason, **figures}
        sleep(poll_s)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _breach(d: Any, window: dict[str, Any], where: str) -> str | None:
    n = window["requests"]
    if n == 0 or n < d.min_watch_requests:
        return None
    rate = window["errors"] / n
    if rate > d.max_error_rate:
        return f"error rate {rate:.4f} > max_error_rate {d.max_error_rate} ({window['errors']} of {n} requests {where})"
    p99 = window.get("p99_ms")
    if p99 is not None and p99 > d.max_p99_ms:
        return f"p99 {p99:.1f} ms > max_p99_ms {d.max_p99_ms} ({n} requests {where})"
    return None


def deploy(spec: PipelineSpec, settings: Settings, lake: Lake, version: str, *, reason: str = "",
           backend: Backend | None = None) -> dict[str, Any]:
    return Deploy(spec, settings, lake, backend=backend).deploy(version, reason=reason)


def rollback(spec: PipelineSpec, settings: Settings, lake: Lake, *, reason: str,
             backend: Backend | None = None) -> dict[str, Any]:
    return Deploy(spec, settings, lake, backend=backend).rollback(reason)


def serving_status(spec: PipelineSpec, settings: Settings, lake: Lake, *, backend: Backend | None = None
                   ) -> dict[str, Any]:
    """``ctloop serve status``: the live URL, the live slot, each slot's version and state, the token file."""
    from ctloop.deploy.records import deploy_history

    token_file = settings.serving_token_file
    try:
        token = _token(settings)
    except ValueError:
        token = ""
    backend = backend or backend_for(spec, settings, token)
    out: dict[str, Any] = {"pipeline": spec.name, "runtime": backend.runtime, "url": backend.live_url(),
                           "token_file": str(token_file) if token_file else None}
    try:
        state = backend.state()
        out["switch"] = "running"
    except BackendError as exc:
        state = {"live": None, "slots": {s: {"version": None, "state": "unknown", "url": None} for s in
                                         ("blue", "green")}}
        out["switch"] = f"not reachable: {exc}"
    finally:
        backend.close()
    live = state["live"]
    out.update({"live_slot": live, "live_version": state["slots"][live]["version"] if live else None,
                "slots": state["slots"]})
    registry = client(settings)
    out["champion"] = current_version(registry, spec.registered_model, "champion")
    out["challenger"] = current_version(registry, spec.registered_model, "challenger")
    history = deploy_history(lake, spec.name, limit=1)
    out["last_deploy"] = ({k: history[0][k] for k in ("deploy_id", "outcome", "reason")} if history else None)
    return out
