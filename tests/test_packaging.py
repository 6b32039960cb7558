"""The suite installed from its wheel, not from a checkout: conf/ ships inside it (synthbench_conf) and
the `synthbench` command runs a job from any folder. The venv sees the packages of the interpreter running
the tests (torch and the rest), so only the suite itself comes from the wheel."""

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR, QUICK, REPO


def host_packages_venv(venv: Path) -> Path:
    """A fresh venv that also sees what the running interpreter has installed, whether that interpreter is
    a bare one or itself a venv's (where `--system-site-packages` would reach the base interpreter's
    packages instead): a .pth file listing the running interpreter's site-packages folders. Only plain
    paths: the checkout's editable install (a finder that a .pth of its own starts) does not come along."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    inner = subprocess.run([venv / "bin" / "python", "-c", "import site; print(site.getsitepackages()[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    folders = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (Path(inner) / "host_packages.pth").write_text("".join(f"{folder}\n" for folder in folders))
    return venv


def test_a_venv_made_for_the_wheel_sees_the_running_interpreters_packages(tmp_path):
    venv = host_packages_venv(tmp_path / "venv")
    probe = "import omegaconf, hydra, torch; print(torch.__file__)"
    seen = subprocess.run([venv / "bin" / "python", "-c", probe], capture_output=True, text=True,
                          timeout=120, check=False)
    assert seen.returncode == 0, seen.stderr[-2000:]
    import torch

    assert seen.stdout.strip() == torch.__file__  # the very packages the tests run with


@pytest.mark.slow
def test_the_built_wheel_runs_a_job_from_any_folder(tmp_path):
    had_build = (REPO / "build").exists()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True, timeout=600)
    if not had_build:  # setuptools builds in the checkout: leave it as it was
        shutil.rmtree(REPO / "build", ignore_errors=True)
    venv = host_packages_venv(tmp_path / "venv")
    wheel = next((tmp_path / "dist").glob("synthbench_llm-*.whl"))
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([venv / "bin" / "python", "-c", "import bench.config as c; print(c.conf_dir())"],
                           cwd=elsewhere, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(venv))  # the wheel's config tree, not the checkout's
    env = {"BENCH_DATA_DIR": str(DATA_DIR), "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    result = subprocess.run([venv / "bin" / "synthbench", *QUICK, "strategy=finetune", "hydra.run.dir=run"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((elsewhere / "run" / "record.json").read_text())
    assert record["status"] == "done" and (elsewhere / "run" / "run.log").is_file()
