"""Talk to a running ``mlfn dev`` from another process: ``mlfn status`` and ``mlfn rollout``.

The running platform writes ``<home>/platform/dev.json`` (its pid and gateway URL); these
functions read it and call the gateway's ``/_mlfn/`` API over loopback HTTP.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from localplatform.errors import PlatformRequestError
from runtime.settings import Settings

__all__ = ["format_status", "request", "rollout", "running_bootstrap", "status", "status_text"]


def _running(settings: Settings) -> dict[str, Any]:
    from localplatform.dev import run_file

    path = run_file(settings)
    hint = "start it with `make dev` (or `mlfn dev`), or pass --cluster for Knative"
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConnectionError(f"no local platform is running (no {path}); {hint}") from None
    except (OSError, ValueError) as err:
        raise ConnectionError(f"cannot read {path}: {err}; {hint}") from err
    pid = int(info.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ConnectionError(
            f"the local platform that wrote {path} (pid {pid}) is gone; {hint}"
        ) from None
    except PermissionError:
        pass
    return info


def running_bootstrap(settings: Settings) -> str | None:
    """The Kafka bootstrap of the running ``mlfn dev`` (its embedded broker), if any.

    For commands like ``mlfn produce`` that should find the broker without ``--bootstrap``.
    """
    try:
        bootstrap = _running(settings).get("bootstrap")
    except ConnectionError:
        return None
    return str(bootstrap) if bootstrap else None


def _endpoint(settings: Settings) -> str:
    return str(_running(settings)["control"])


def request(settings: Settings, path: str, payload: dict[str, Any] | None = None) -> Any:
    """Call the running platform's API; return the decoded JSON answer.

    Raises:
        ConnectionError: no platform is running, or it does not answer.
        PlatformRequestError: the platform refused the request (the message says why).
    """
    url = f"{_endpoint(settings)}/{path}"
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read()).get("error", str(err))
        except ValueError:
            message = str(err)
        raise PlatformRequestError(message) from err
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f"the local platform at {url} does not answer: {err}") from err


def status(settings: Settings) -> dict[str, Any]:
    """The running platform's state as JSON (``GET /_mlfn/status``)."""
    result: dict[str, Any] = request(settings, "status")
    return result


def status_text(settings: Settings) -> str:
    """``mlfn status`` for the local platform: functions, revisions, instances, events.

    Raises:
        ConnectionError: no ``mlfn dev`` is running.
    """
    return format_status(status(settings))


def rollout(
    settings: Settings, function: str, *, percent: int | None, promote: bool, rollback: bool
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
                f"dead-lettered {d.get('dead_lettered', 0)}  restarts {d.get('restarts', 0)}"
            )
            if d.get("restarts") and d.get("last_error"):
                lines.append(f"    last stopped by: {d['last_error']}")
        for name, ds in eventing.get("datasets", {}).items():
            lines.append(
                f"  dataset {name:16} rows {ds['rows']}  duplicates dropped {ds['duplicates']}"
            )
    return "\n".join(lines)
