"""The loader: one path for the organism, hub models and local folders; fast, clear failures."""

import time

import pytest

from ctx_utils import models
from ctx_utils.models import HubUnreachableError, ModelNotFoundError, choose_model, load_model


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ModelNotFoundError) as err:
        models.resolve_source("gpt3-tiny")
    for name in models.MODEL_NAMES:
        assert name in str(err.value)


def test_alias_and_names():
    assert models.canonical_name("gpt2") == "gpt2-small"
    assert models.resolve_source("gpt2") == "gpt2"
    assert models.resolve_source("pythia-160m") == "EleutherAI/pythia-160m"


@pytest.mark.parametrize("offline_flag", ["1", ""])
def test_hub_model_offline_fails_fast_and_names_the_organism(monkeypatch, offline_flag):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline_flag)
    monkeypatch.setattr(models, "is_cached", lambda repo_id: False)

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(models.socket, "create_connection", no_network)
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError) as err:
        load_model("gpt2-small")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "unreachable" in message and "organism" in message


def test_local_folder_loads_in_compatibility_mode(tiny_model):
    cfg = tiny_model.cfg
    assert tiny_model.W_out.shape == (cfg.n_layers, cfg.d_mlp, cfg.d_model)
    assert tiny_model.W_U.shape == (cfg.d_model, cfg.d_vocab)
    # compatibility mode centres the unembedding: every row of W_U sums to ~0 over the vocabulary
    assert tiny_model.W_U.mean(-1).abs().max() < 1e-5


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        models.resolve_source(str(tmp_path))


def test_device_override(monkeypatch):
    monkeypatch.setenv("CTX_DEVICE", "meta")
    assert models.pick_device() == "meta"
    assert models.pick_device("cpu") == "cpu"
    monkeypatch.delenv("CTX_DEVICE")
    assert models.pick_device() in {"cuda", "mps", "cpu"}


def test_auto_model_offline_is_the_organism_and_says_why(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "is_cached", lambda repo_id: False)
    choice = choose_model("auto")
    assert choice.name == "organism"
    assert "unreachable" in choice.reason


def test_explicit_model_choice_is_checked_at_once():
    with pytest.raises(ModelNotFoundError):
        choose_model("not-a-model")
    assert choose_model("gpt2").name == "gpt2-small"


@pytest.mark.skipif(not (models.ORGANISM_DIR / "config.json").exists(), reason="organism not trained yet")
def test_organism_loads_through_the_same_path():
    model = load_model("organism", device="cpu")
    assert model.cfg.n_layers >= 2
    tokens = model.to_tokens(" the")
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id


def test_a_local_folder_choice_loads_and_names_its_results_folder(tiny_model_dir, tmp_path, monkeypatch):
    from ctx_utils.results import results_dir

    monkeypatch.setenv("CTX_RESULTS", str(tmp_path))
    choice = choose_model(str(tiny_model_dir))
    assert load_model(choice.name, device="cpu").cfg.n_layers == 2
    assert results_dir(choice.name) == tmp_path / tiny_model_dir.name
