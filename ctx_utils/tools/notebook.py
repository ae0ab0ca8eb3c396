"""What a notebook does when there is nothing left to show: say why, and run the rest as empty cells."""

from __future__ import annotations


def skip_rest(reason: str) -> None:
    """Print ``reason``, then make every later cell of this notebook run as an empty cell.

    A finding the model does not show (no pair selected, no data) is reported, not an error: a headless run
    (``make run``, nbmake) still passes, and the printed reason says what to change to see more.
    """
    print(reason)
    print("The rest of this notebook is skipped.")
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        shell.input_transformers_cleanup.append(lambda lines: [])
