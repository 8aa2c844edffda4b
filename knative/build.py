"""Images: stage a minimal build context, hash it, find a builder that works, build and push.

Images are tagged by the content digest of their build context, so the same sources give
the same tag. After a push the registry digest is recorded in ``HOME/images.json`` and the
manifests reference ``image@sha256:...``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from knative.errors import BuildError

__all__ = [
    "BUILDERS",
    "Builder",
    "build_image",
    "context_digest",
    "context_files",
    "detect_builder",
    "image_refs",
    "read_record",
    "resolved_images",
    "write_record",
]

DOCKERFILE = Path(__file__).parent / "images" / "Dockerfile"
BUILDERS = ("docker", "podman", "buildah")
VARIANTS = ("cpu", "cuda")
_SOURCES = (
    "pyproject.toml",
    "README.md",
    "mlfn",
    "runtime",
    "eventing",
    "knative",
    "localplatform",
)
_SKIP = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _walk(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        for child in sorted(path.iterdir()):
            if child.name not in _SKIP and child.suffix != ".pyc":
                yield from _walk(child)


def context_files(repo: Path, functions_package: str) -> list[Path]:
    """Files the image needs, relative to ``repo``, in a stable order."""
    roots = [*_SOURCES, functions_package.split(".")[0]]
    files = {p.relative_to(repo) for r in dict.fromkeys(roots) for p in _walk(repo / r)}
    return sorted(files)


def context_digest(repo: Path, functions_package: str) -> str:
    """sha256 over the Dockerfile and every context file's path and bytes."""
    h = hashlib.sha256()
    h.update(DOCKERFILE.read_bytes())
    for rel in context_files(repo, functions_package):
        h.update(rel.as_posix().encode() + b"\0")
        h.update((repo / rel).read_bytes() + b"\0")
    return h.hexdigest()


def image_refs(registry: str, digest: str) -> dict[str, str]:
    """Content-tagged image references per variant (``<registry>/mlfn:sha-<12 hex>``)."""
    tag = f"sha-{digest[:12]}"
    return {"cpu": f"{registry}/mlfn:{tag}", "cuda": f"{registry}/mlfn-cuda:{tag}"}


def read_record(path: Path) -> dict[str, object]:
    """The build record, or an empty one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(path: Path, digest: str, images: dict[str, str]) -> None:
    """Record what was built from which context (merged with earlier variants)."""
    record = read_record(path)
    known = record.get("images") if record.get("context") == digest else None
    merged = {**(known if isinstance(known, dict) else {}), **images}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"context": digest, "images": merged}, indent=2) + "\n")


def resolved_images(record_path: Path, registry: str, digest: str) -> dict[str, str]:
    """Image references for the manifests: pushed digests from the record when it matches
    the current sources, else the content tags a build would produce."""
    refs = image_refs(registry, digest)
    record = read_record(record_path)
    images = record.get("images")
    if record.get("context") == digest and isinstance(images, dict):
        refs.update({k: str(v) for k, v in images.items() if k in refs})
    return refs


@dataclass(frozen=True)
class Builder:
    """A container builder found on PATH whose daemon or storage answers."""

    name: str
    executable: str

    def build_cmd(self, dockerfile: Path, context: Path, ref: str, variant: str) -> list[str]:
        verb = "bud" if self.name == "buildah" else "build"
        return [
            self.executable,
            verb,
            "-f",
            str(dockerfile),
            "--build-arg",
            f"VARIANT={variant}",
            "-t",
            ref,
            str(context),
        ]


def detect_builder(path: str, run: Runner = subprocess.run, timeout: float = 20.0) -> Builder:
    """The first of docker, podman, buildah on ``path`` whose ``info`` succeeds.

    Raises:
        BuildError: none works; the message says what each answered and what to install.
    """
    tried: list[str] = []
    for name in BUILDERS:
        exe = shutil.which(name, path=path)
        if exe is None:
            tried.append(f"{name}: not on PATH")
            continue
        try:
            done = run([exe, "info"], capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            tried.append(f"{name}: `{name} info` failed: {err}")
            continue
        if done.returncode == 0:
            return Builder(name, exe)
        first = (done.stderr or done.stdout).strip().splitlines()
        tried.append(f"{name}: `{name} info` exited {done.returncode}: {first[0] if first else ''}")
    raise BuildError(
        "no working container builder:\n  " + "\n  ".join(tried) + "\n"
        "Install one and make sure it can build: Docker Engine (start it: "
        "`sudo systemctl start docker`, or Docker Desktop), Podman (`podman machine start` "
        "on macOS/Windows) or Buildah (rootless: needs /etc/subuid and /etc/subgid entries)."
    )


def stage_context(repo: Path, functions_package: str, dest: Path) -> Path:
    """Copy the context files and the Dockerfile into ``dest``; return the Dockerfile path."""
    for rel in context_files(repo, functions_package):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest / rel)
    dockerfile = dest / "Dockerfile.mlfn"
    shutil.copy2(DOCKERFILE, dockerfile)
    return dockerfile


def _checked(run: Runner, cmd: Sequence[str], what: str) -> str:
    done = run(list(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")
    return str(done.stdout)


def build_image(
    builder: Builder,
    repo: Path,
    functions_package: str,
    ref: str,
    variant: str,
    *,
    push: bool,
    run: Runner = subprocess.run,
) -> str:
    """Build (and push) one image; return the reference manifests should use.

    Returns:
        ``repo@sha256:...`` after a push (the registry digest), else ``ref`` itself.
    """
    with tempfile.TemporaryDirectory(prefix="mlfn-build-") as tmp:
        dockerfile = stage_context(repo, functions_package, Path(tmp))
        _checked(
            run, builder.build_cmd(dockerfile, Path(tmp), ref, variant), f"{builder.name} build"
        )
        if not push:
            return ref
        name = ref.rsplit(":", 1)[0]
        if builder.name == "docker":
            _checked(run, [builder.executable, "push", ref], "docker push")
            out = _checked(
                run,
                [builder.executable, "inspect", "--format", "{{index .RepoDigests 0}}", ref],
                "docker inspect",
            ).strip()
            return out or ref
        digest_file = Path(tmp) / "digest"
        _checked(
            run,
            [builder.executable, "push", "--digestfile", str(digest_file), ref],
            f"{builder.name} push",
        )
        digest = digest_file.read_text().strip() if digest_file.exists() else ""
        return f"{name}@{digest}" if digest else ref
