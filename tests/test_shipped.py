"""The shipped sample data and recipes are found from any working directory and from an
installed wheel, never through a path relative to a module's own file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

import workbench
from workbench.data import shipped
from workbench.data.shipped import find_path, sample_file, shipped_folder


def test_sample_paths_resolve_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = find_path("sample_data/support_tickets.jsonl")
    assert found.is_file() and found.parent == shipped_folder("sample_data")
    assert find_path("configs/lora_support_tickets.yaml").is_file()
    assert len(workbench.load_data("sample_data/support_tickets.jsonl", verbose=False)) == 320


def test_a_file_of_the_same_name_in_the_working_directory_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample_data").mkdir()
    (tmp_path / "sample_data" / "support_tickets.jsonl").write_text(
        '{"instruction": "a", "output": "b"}\n'
    )
    assert find_path("sample_data/support_tickets.jsonl").resolve().parent == (
        tmp_path / "sample_data"
    )
    assert len(workbench.load_data("sample_data/support_tickets.jsonl", verbose=False)) == 1


def test_other_relative_paths_are_left_for_the_callers_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(find_path("data/missing.jsonl")) == "data/missing.jsonl"
    with pytest.raises(FileNotFoundError, match="sample_data/nothing.jsonl does not exist"):
        workbench.load_data("sample_data/nothing.jsonl")


def test_a_missing_shipped_folder_says_how_to_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "PACKAGE", tmp_path / "workbench")
    with pytest.raises(FileNotFoundError, match="pip install"):
        sample_file("support_tickets.jsonl")


def test_an_installed_wheel_carries_the_sample_data_and_recipes(tmp_path):
    """Build the wheel (from a copy: a build leaves build/ behind), unpack it, import workbench
    from it in another folder."""
    source = tmp_path / "source"
    for name in ("workbench", "widgets", "sample_data", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    probe = (
        "import workbench; from workbench.data.shipped import sample_file, find_path;"
        "print(workbench.__file__); print(sample_file('support_tickets.jsonl'));"
        "print(find_path('configs/full_date_rewrite.yaml'))"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    site = str(tmp_path / "site")
    assert all(line.startswith(site) for line in lines), lines
    assert lines[1].endswith("workbench/sample_data/support_tickets.jsonl")
