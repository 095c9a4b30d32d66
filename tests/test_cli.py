"""The ``stk-vqa`` command: help for every command, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stk_vqa.cli import COMMANDS


def run(*args):
    return subprocess.run([sys.executable, "-m", "stk_vqa.cli", *args], capture_output=True, text=True, timeout=120)


def test_usage_lists_every_command():
    result = run()
    assert result.returncode == 0
    assert all(name in result.stdout for name in COMMANDS)


@pytest.mark.parametrize(
    "command, flag", [("build", "--group_by_image"), ("train", "--lora_scope"), ("generate", "--data_split")]
)
def test_help_shows_flags_without_running(command, flag, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stk_vqa.cli", command, "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PAGER": "cat", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert flag in result.stdout + result.stderr  # argparse help, on stdout
    assert list(tmp_path.iterdir()) == []  # nothing was built or trained


def test_errors_are_one_line(tmp_path):
    result = run("build", "--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "out"), "--bogus", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown option(s) ['bogus']") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    result = run("generate", "--data_split", "nope", "--data_dir", str(tmp_path))
    assert result.returncode == 1 and result.stderr.strip() == f"error: split folder not found: {tmp_path / 'nope'}"
    result = run("frobnicate")
    assert result.returncode != 0 and "unknown command 'frobnicate'" in result.stderr
