"""Images: context hashing, builder detection with fake executables, build and push commands."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from knative.build import (
    build_image,
    context_digest,
    context_files,
    detect_builder,
    image_refs,
    resolved_images,
    write_record,
)
from knative.errors import BuildError

pytestmark = pytest.mark.unit


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for rel, text in {
        "pyproject.toml": "[project]\n",
        "README.md": "x\n",
        "runtime/__init__.py": "",
        "functions/predict.py": "A = 1\n",
        "functions/__pycache__/predict.cpython-311.pyc": "junk",
        "docs/other.md": "not in the image\n",
    }.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    return repo


def _fake(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_context_holds_only_what_the_image_needs(tmp_path: Path) -> None:
    files = [p.as_posix() for p in context_files(_repo(tmp_path), "functions")]
    assert files == ["README.md", "functions/predict.py", "pyproject.toml", "runtime/__init__.py"]


def test_digest_is_stable_and_follows_the_content(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    first = context_digest(repo, "functions")
    assert context_digest(repo, "functions") == first
    (repo / "docs/other.md").write_text("changed\n")
    (repo / "functions/__pycache__/predict.cpython-311.pyc").write_text("other junk")
    assert context_digest(repo, "functions") == first
    (repo / "functions/predict.py").write_text("A = 2\n")
    assert context_digest(repo, "functions") != first
    assert image_refs("r.io/me", first) == {
        "cpu": f"r.io/me/mlfn:sha-{first[:12]}",
        "cuda": f"r.io/me/mlfn-cuda:sha-{first[:12]}",
    }


def test_manifests_use_the_recorded_digest_only_for_the_same_sources(tmp_path: Path) -> None:
    record = tmp_path / "images.json"
    write_record(record, "abc" * 10, {"cpu": "r.io/me/mlfn@sha256:1111"})
    assert resolved_images(record, "r.io/me", "abc" * 10)["cpu"] == "r.io/me/mlfn@sha256:1111"
    assert (
        resolved_images(record, "r.io/me", "abc" * 10)["cuda"]
        == "r.io/me/mlfn-cuda:sha-abcabcabcabc"
    )
    assert resolved_images(record, "r.io/me", "def" * 10)["cpu"] == "r.io/me/mlfn:sha-defdefdefdef"


def test_no_working_builder_says_what_each_answered_and_what_to_install(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake(
        bin_dir,
        "docker",
        "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2\nexit 1\n",
    )
    _fake(bin_dir, "podman", "echo 'cannot connect to Podman socket' >&2\nexit 125\n")
    with pytest.raises(BuildError) as err:
        detect_builder(str(bin_dir))
    text = str(err.value)
    assert "docker: `docker info` exited 1: Cannot connect to the Docker daemon" in text
    assert "podman: `podman info` exited 125: cannot connect to Podman socket" in text
    assert "buildah: not on PATH" in text
    assert "Install one" in text and "systemctl start docker" in text


def test_the_first_builder_that_works_is_used(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "docker", "exit 1\n")
    _fake(bin_dir, "podman", "exit 0\n")
    builder = detect_builder(str(bin_dir))
    assert (builder.name, builder.executable) == ("podman", str(bin_dir / "podman"))


def test_docker_build_push_returns_the_registry_digest(tmp_path: Path) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    _fake(
        bin_dir,
        "docker",
        f"""echo "$@" >> {log}
case "$1" in
  build) test -f "$3" && test -f "$(dirname "$3")/functions/predict.py" || exit 3 ;;
  inspect) echo "r.io/me/mlfn@sha256:feed" ;;
esac
exit 0
""",
    )
    builder = detect_builder(str(bin_dir))
    ref = build_image(builder, _repo(tmp_path), "functions", "r.io/me/mlfn:sha-1", "cpu", push=True)
    assert ref == "r.io/me/mlfn@sha256:feed"
    calls = log.read_text().splitlines()
    assert calls[0] == "info"
    assert (
        calls[1].startswith("build -f ")
        and "--build-arg VARIANT=cpu -t r.io/me/mlfn:sha-1" in calls[1]
    )
    assert calls[2:] == [
        "push r.io/me/mlfn:sha-1",
        "inspect --format {{index .RepoDigests 0}} r.io/me/mlfn:sha-1",
    ]


def test_buildah_push_reads_the_digest_file_and_failures_show_the_output(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake(
        bin_dir,
        "buildah",
        """case "$1" in
  push) printf 'sha256:beef' > "$3" ;;
esac
exit 0
""",
    )
    builder = detect_builder(str(bin_dir))
    assert builder.build_cmd(Path("D"), Path("C"), "r/x:1", "cuda")[1:3] == ["bud", "-f"]
    ref = build_image(
        builder, _repo(tmp_path), "functions", "r.io/me/mlfn-cuda:sha-1", "cuda", push=True
    )
    assert ref == "r.io/me/mlfn-cuda@sha256:beef"
    _fake(
        bin_dir,
        "buildah",
        "[ \"$1\" = info ] && exit 0\necho 'STEP 3/9: no space left on device' >&2\nexit 2\n",
    )
    with pytest.raises(
        BuildError, match=r"(?s)buildah build failed \(exit 2\).*no space left on device"
    ):
        build_image(builder, _repo(tmp_path), "functions", "r/x:1", "cpu", push=False)


def test_dockerfile_is_multi_stage_non_root_with_a_cuda_variant() -> None:
    text = (Path(__file__).resolve().parents[2] / "knative/images/Dockerfile").read_text()
    assert text.count("\nFROM python:${PYTHON}-slim") == 2
    assert "USER 10001:10001" in text
    assert '".[torch]"' in text and "VARIANT=cpu" in text
    assert "[dev" not in text
    assert 'ENTRYPOINT ["mlfn"]' in text
