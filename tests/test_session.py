"""What the kit keeps between calls is owned by ``ctx_utils.session.SESSION``: shared while used, freed with its
model, forgotten on ``clear()``; and importing the kit changes nothing in the process until a model is loaded."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

from ctx_utils import models, neurons, pipeline
from ctx_utils.session import SESSION, Session
from ctx_utils.settings import DEFAULTS, SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_a_notebook_and_the_pipeline_share_one_loaded_model(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(SESSION, "models", {})
    settings = DEFAULTS.replace(model=str(tiny_model_dir), device="cpu")
    model = pipeline.model(settings)
    assert pipeline.model(settings) is model and SESSION.models == {(str(tiny_model_dir), "cpu"): model}


def test_a_dropped_model_frees_its_twin_and_vocabulary_projection(tiny_model_dir):
    model = models.load_model(str(tiny_model_dir), device="cpu")
    twin = models.sdpa_twin(model)
    assert twin is not None and models.sdpa_twin(model) is twin  # built once
    neurons.congruence(model, 1)
    cache = SESSION.cache_of(model)
    assert cache.source == str(tiny_model_dir) and cache.twin is twin and list(cache.vocab) == [1]
    kept = [weakref.ref(obj) for obj in (cache, twin[0], cache.vocab[1][1].congruence)]
    del model, twin, cache
    gc.collect()
    assert [ref() for ref in kept] == [None, None, None], "the session keeps a dropped model's caches alive"


def test_clear_forgets_everything_as_in_a_fresh_process():
    session, model = Session(), torch.nn.Linear(1, 1)
    session.models[("organism", "cpu")] = model
    session.cache_of(model).source = "organism"
    session.depth, session.viz_mode, session.bundle_output = 2, "cdn", ("cell", "run")
    session.clear()
    fresh = Session()
    assert vars(session).keys() == vars(fresh).keys()
    assert session.models == {} and session.depth == 0 and session.viz_mode is None and session.bundle_output is None
    assert session.cache_of(model).source is None


CHILD = """
import os, torch
torch.set_num_threads(2)
before = dict(os.environ)
import ctx_utils, ctx_utils.pipeline, ctx_utils.viz  # what a notebook imports first
assert dict(os.environ) == before, "importing the kit changed the environment"
assert torch.get_num_threads() == 2, "importing the kit changed torch's threads"
"""


def test_importing_the_kit_changes_neither_the_environment_nor_torch():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"CTX_TORCH_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_loading_a_model_pins_torch_to_ctx_torch_threads(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("CTX_TORCH_THREADS", "1")
    own = torch.get_num_threads()  # this test process's (tests/conftest.py)
    torch.set_num_threads(2)
    try:
        models.load_model(str(tiny_model_dir), device="cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(own)


def test_a_thread_count_that_is_no_number_names_the_fix(monkeypatch):
    monkeypatch.setenv("CTX_TORCH_THREADS", "two")
    with pytest.raises(SettingsError, match=r"CTX_TORCH_THREADS is 'two'.*number of CPU threads.*or unset it"):
        models.pin_torch_threads()


def test_loading_a_model_and_its_twin_prints_no_progress_bar(tiny_model_dir, capfd):
    """A notebook that reads the model shows no "Loading weights" bar; the bar comes back on for everything else."""
    from transformers.utils import logging as hf_logging

    model = models.load_model(str(tiny_model_dir), device="cpu")
    models.sdpa_twin(model)
    assert "Loading weights" not in "".join(capfd.readouterr())
    assert hf_logging.is_progress_bar_enabled()
