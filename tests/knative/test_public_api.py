"""The knative package's public surface is explicit and importable without a cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest

import knative

pytestmark = pytest.mark.unit


def test_exports_are_pinned() -> None:
    assert knative.__all__ == [
        "BuildError", "Cluster", "ClusterError", "ForbiddenError", "KnativeError",
        "NoKubeconfigError", "NotInstalledError", "NotReadyError", "ObjectStatus", "Readiness",
        "RenderError", "RenderOptions", "Rendered", "RolloutResult", "UnauthorizedError",
        "UnreachableError", "apply_all", "connect", "delete_all", "render", "rollout",
    ]  # fmt: skip
    for name in knative.__all__:
        assert getattr(knative, name) is not None


def test_errors_share_one_root_and_render_errors_are_value_errors() -> None:
    from runtime.errors import MlfnError

    assert issubclass(knative.KnativeError, MlfnError)
    assert issubclass(knative.RenderError, ValueError)
    assert issubclass(knative.ForbiddenError, knative.ClusterError)


def test_the_cli_module_does_not_import_the_kubernetes_client() -> None:
    code = "import knative.cli, sys; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
