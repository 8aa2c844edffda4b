"""Talk to a running ``mlfn dev`` from another process: ``mlfn status`` and ``mlfn rollout``.

The running platform writes ``<home>/platform/dev.json`` (its pid and gateway URL); these
functions read it and call the gateway's ``/_mlfn/`` API over loopback HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3

from localplatform.errors import PlatformRequestError
from localplatform.settings import LocalRoot
from runtime.localstate import running_platform

__all__ = ["format_status", "request", "rollout", "status", "status_text"]


def _running(settings: LocalRoot) -> dict[str, Any]:
    return running_platform(settings.common.home)


def _endpoint(settings: LocalRoot) -> str:
    return str(_running(settings)["control"])


def request(settings: LocalRoot, path: str, payload: dict[str, Any] | None = None) -> Any:
    """Call the running platform's API; return the decoded JSON answer.

    Raises:
        ConnectionError: no platform is running, or it does not answer.
        PlatformRequestError: the platform refused the request (the message says why).
    """
    url = f"{_endpoint(settings)}/{path}"
    try:
        resp = urllib3.request(
            "POST" if payload is not None else "GET",
            url,
            body=json.dumps(payload).encode() if payload is not None else None,
            headers={"Content-Type": "application/json"},
            timeout=10,
            retries=False,
        )
    except urllib3.exceptions.HTTPError as err:
        raise ConnectionError(f"the local platform at {url} does not answer: {err}") from err
    if resp.status >= 400:
        try:
            message = json.loads(resp.data).get("error", resp.reason)
        except (ValueError, AttributeError):
            message = f"{resp.status} {resp.reason}"
        raise PlatformRequestError(str(message))
    return json.loads(resp.data)


def status(settings: LocalRoot) -> dict[str, Any]:
    """The running platform's state as JSON (``GET /_mlfn/status``)."""
    result: dict[str, Any] = request(settings, "status")
    return result


def status_text(settings: LocalRoot) -> str:
    """``mlfn status`` for the local platform: functions, revisions, instances, events.

    Raises:
        ConnectionError: no ``mlfn dev`` is running.
    """
    return format_status(status(settings))


def rollout(
    settings: LocalRoot, function: str, *, percent: int | None, promote: bool, rollback: bool
) -> str:
    """Move traffic between the latest and the previous revision of ``function``.

    ``percent``: the latest revision gets P%, the previous one the rest; ``promote``: all
    to the latest; ``rollback``: all to the previous.

    Raises:
        ConnectionError: no ``mlfn dev`` is running.
        PlatformRequestError: the move is not possible (one revision only, unknown function).
        ValueError: not exactly one of percent, promote, rollback.
    """
    if sum([percent is not None, promote, rollback]) != 1:
        raise ValueError("say exactly one of --percent P, --promote or --rollback")
    payload: dict[str, Any] = {"function": function}
    if promote:
        payload["promote"] = True
    elif rollback:
        payload["rollback"] = True
    else:
        payload["percent"] = percent
    answer = request(settings, "rollout", payload)
    split = ", ".join(f"{rev} {p}%" for rev, p in answer["traffic"].items())
    return f"{function}: traffic {split}"


def _phases(cold: dict[str, Any]) -> str:
    parts = " ".join(f"{k} {v * 1000:.0f}ms" for k, v in cold["phases_s"].items())
    return f"{cold['total_s'] * 1000:.0f}ms ({parts})"


def format_status(state: dict[str, Any]) -> str:
    """Render the status JSON as the text ``mlfn status`` prints."""
    lines = [
        f"gateway {state['gateway']}  (namespace {state['namespace']}, domain {state['domain']})"
    ]
    for name, fn in state["functions"].items():
        lines.append("")
        lines.append(f"{name} ({fn['kind']})  http://{name}.{state['namespace']}.{state['domain']}")
        for rev in fn["revisions"]:
            counts: dict[str, int] = {}
            for inst in rev["instances"]:
                counts[inst["state"]] = counts.get(inst["state"], 0) + 1
            inst_text = ", ".join(f"{n} {s}" for s, n in counts.items()) or "0"
            models = ",".join(rev["model_versions"]) or "-"
            obs = rev["observed"]
            lines.append(
                f"  {rev['name']}  traffic {rev['traffic_percent']:>3}%  instances {inst_text} "
                f"(desired {rev['desired']})  in-flight {rev['in_flight']}  "
                f"served {rev['served']}  errors {rev['errors']}  model v{models}"
            )
            lines.append(
                f"    concurrency stable {obs['stable']:.2f} panic {obs['panic']:.2f}"
                + ("  PANIC" if obs["panicking"] else "")
                + (f"  ({obs['reason']})" if obs.get("reason") else "")
            )
            for d in rev["decisions"][:3]:
                lines.append(
                    f"    scaled to {d['desired']} {d['ago_s']}s ago: {d['reason']} "
                    f"(stable {d['stable']:.2f}, panic {d['panic']:.2f})"
                )
            for c in rev["cold_starts"][:3]:
                lines.append(f"    cold start {c['instance']} {c['ago_s']}s ago: {_phases(c)}")
            if rev["last_failure"]:
                lines.append(
                    f"    start failures {rev['start_failures']}, last: {rev['last_failure']}"
                )
    eventing = state.get("eventing")
    lines.append("")
    if not eventing:
        lines.append("eventing: off")
    elif "error" in eventing:
        lines.append(f"eventing ({eventing['bootstrap']}): stats unavailable: {eventing['error']}")
    else:
        lines.append(f"eventing (broker {eventing['bootstrap']}); lag is approximate on Tansu")
        for d in eventing["dispatchers"]:
            lag = sum(d.get("lag_approximate", {}).values())
            lines.append(
                f"  {d['kind']:7} {d['name']:20} topics {','.join(d['topics'])} -> {d['sink']}  "
                f"lag {lag}  delivered {d.get('delivered', 0)}  retried {d.get('retried', 0)}  "
                f"dead-lettered {d.get('dead_lettered', 0)}"
            )
    return "\n".join(lines)
