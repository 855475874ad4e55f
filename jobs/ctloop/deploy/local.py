"""The ``local`` runtime's deploy backend: the traffic switch's admin API (``deploy.switch``).

Loading a version starts a slot process under the switch, readiness is the slot's
``/v2/health/ready`` as the switch sees it, the switch is the switch's pointer swap, and the watch
reads the switch's own per-slot counts. Every call carries the serving token.
"""

from __future__ import annotations

import time
from typing import Any

from ctloop.config.settings import Settings


class BackendError(RuntimeError):
    """The serving side did not do what the deploy asked (a slot that never got ready, a refused switch)."""


class LocalBackend:
    runtime = "local"

    def __init__(self, settings: Settings, pipeline: str, token: str, *, base_url: str | None = None) -> None:
        import httpx

        self.pipeline = pipeline
        self.base_url = base_url or f"http://127.0.0.1:{settings.serving_port}"
        self.http = httpx.Client(base_url=self.base_url, timeout=30.0,
                                 headers={"Authorization": f"Bearer {token}"})
        self.owner: str | None = None

    # -- helpers ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"the traffic switch at {self.base_url} is not answering ({exc!r}): "
                               "is the stack up (`ctloop stack up`)?") from None
        if response.status_code >= 400:
            raise BackendError(f"switch: {method} {path}: HTTP {response.status_code}: "
                               f"{response.json().get('error', response.text)}")
        return response.json()

    def _admin(self, action: str) -> str:
        return f"/admin/pipelines/{self.pipeline}/{action}"

    # -- the backend interface ----------------------------------------------------------------
    def live_url(self) -> str:
        return f"{self.base_url}/v2/models/{self.pipeline}"

    def state(self) -> dict[str, Any]:
        """``{"live": slot|None, "slots": {slot: {"version", "state", "url"}}}`` of this pipeline."""
        route = self._call("GET", "/admin/state")["pipelines"].get(self.pipeline)
        if route is None:
            return {"live": None, "slots": {s: {"version": None, "state": "stopped", "url": None}
                                            for s in ("blue", "green")}}
        return {"live": route["live"], "switched_at": route["switched_at"],
                "slots": {n: {"version": s["version"], "state": s["state"], "url": s["url"], "reason": s["reason"],
                              "retire_at": s["retire_at"]} for n, s in route["slots"].items()}}

    def acquire(self, owner: str, ttl_s: float) -> None:
        self._call("POST", self._admin("lease"), json={"owner": owner, "ttl_s": ttl_s})
        self.owner = owner

    def release(self) -> None:
        if self.owner:
            self._call("DELETE", self._admin("lease"), params={"owner": self.owner})

    def load(self, slot: str, version: str) -> None:
        self._call("PUT", f"{self._admin('slots')}/{slot}", json={"version": version, "owner": self.owner})

    def wait_ready(self, slot: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state()["slots"][slot]
            if state["state"] in ("warm", "live"):
                return
            if state["state"] in ("failed", "stopped"):
                raise BackendError(f"slot {slot} {state['state']}: {state['reason'] or 'no reason given'}")
            time.sleep(0.25)
        raise BackendError(f"slot {slot} not ready within {timeout_s:.0f}s")

    def slot_url(self, slot: str) -> str:
        url = self.state()["slots"][slot]["url"]
        if not url:
            raise BackendError(f"slot {slot} is not running")
        return url

    def switch(self, to: str, expect: str | None) -> dict[str, Any]:
        return self._call("POST", self._admin("switch"), json={"slot": to, "expect": expect, "owner": self.owner})

    def stats(self, slot: str, since: float, until: float | None = None) -> dict[str, Any]:
        params = {"slot": slot, "since": since, **({"until": until} if until is not None else {})}
        return self._call("GET", self._admin("stats"), params=params)

    def retire(self, slot: str, after_s: float) -> None:
        self._call("POST", self._admin("retire"), json={"slot": slot, "after_s": after_s})

    def stop(self, slot: str) -> None:
        self._call("DELETE", f"{self._admin('slots')}/{slot}", params={"owner": self.owner or ""})

    def close(self) -> None:
        self.http.close()
