"""The notebook runner (``make run``) when things go wrong or get noisy (issue 23, items 4, 6 and 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ctx_utils.settings import KIT_ROOT, absolute_path_variables
from ctx_utils.tools import run_notebooks

TCP_WARNING = "without encryption"


def test_run_json_errors_carry_no_colour_codes():
    """Item 11: run.json errors carried IPython's ANSI colour codes."""
    err = CellExecutionError("\x1b[31m---\x1b[39m\n\x1b[0;31mAssertionError\x1b[0m: head 16: no prompt", "", "AssertionError")
    assert run_notebooks.error_line(err) == "AssertionError: head 16: no prompt"


def test_path_variables_are_made_absolute_once_before_kernels_start(tmp_path, monkeypatch):
    """Item 4: kernels run in notebooks/, so a relative CTX_RESULTS meant another folder there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("a document")
    environ = {"CTX_RESULTS": "x", "CTX_LLM_CACHE": "~/cache", "CTX_CORPUS": "corpus.txt", "CTX_MODEL": "organism"}
    absolute_path_variables(environ)
    assert environ == {"CTX_RESULTS": str(tmp_path / "x"), "CTX_LLM_CACHE": str(Path.home() / "cache"),
                       "CTX_CORPUS": str(tmp_path / "corpus.txt"), "CTX_MODEL": "organism"}


def test_kernels_of_this_session_are_encrypted():
    """Item 11: tests/conftest.py makes nbmake's kernels (make test) use CurveZMQ, as make run's."""
    from jupyter_client.manager import KernelManager

    assert KernelManager().transport_encryption == "auto"


def notebook(folder: Path, name: str, source: str) -> None:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), folder / name)


@pytest.mark.slow
def test_a_kernel_started_as_nbmake_does_prints_no_tcp_warning(tmp_path, capfd):
    """Item 11: every `make test` line carried "Kernel is running over TCP without encryption"."""
    notebook(tmp_path, "01_a.ipynb", "print(1 + 1)")
    nb = nbformat.read(tmp_path / "01_a.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3").execute()  # nbmake's call: no configuration
    assert nb.cells[0].outputs[0]["text"] == "2\n"
    assert TCP_WARNING not in capfd.readouterr().err


@pytest.mark.slow
def test_ctrl_c_in_make_run_ends_with_one_line(tmp_path):
    """Items 6 and 11: Ctrl-C ended in DeadKernelError and a bare AssertionError; every line warned of TCP."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook(folder, "01_a.ipynb", "print(1 + 1)")
    notebook(folder, "02_slow.ipynb", "import time\nprint('started', flush=True)\ntime.sleep(120)")
    script = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as in a terminal
              "from pathlib import Path; from ctx_utils.tools import run_notebooks\n"
              f"run_notebooks.NOTEBOOKS_DIR = Path({str(folder)!r})\n"
              "sys.exit(run_notebooks.main(['--model', 'organism']))")
    env = {**os.environ, "CTX_RESULTS": str(tmp_path / "results"), "PYTHONPATH": str(KIT_ROOT)}
    run = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_dir = tmp_path / "results" / "organism" / "notebooks"
    deadline = time.time() + 120
    while not (out_dir / "01_a.html").exists() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(5)  # 02_slow's kernel is running its cell
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert err.strip().splitlines() == [
        f"Interrupted during 02_slow.ipynb: kept the executed pages of 01_a.ipynb in {out_dir}, and no result file in "
        f"{out_dir.parent} (complete files; a rerun loads them)."
    ]
    assert "→ 01_a.ipynb … ok" in out and TCP_WARNING not in out + err
