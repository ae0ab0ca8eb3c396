"""The loader: one path for the organism, hub models and local folders; fast, clear failures."""

import time
import warnings

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
    monkeypatch.setenv("CTX_DEVICE", "CPU")
    assert models.pick_device() == "cpu"
    monkeypatch.setenv("CTX_DEVICE", "gpu")
    assert models.pick_device("cpu") == "cpu"  # the argument wins over the environment
    monkeypatch.delenv("CTX_DEVICE")
    assert models.pick_device() in {"cuda", "mps", "cpu"}


@pytest.fixture
def cpu_only_torch(monkeypatch):
    """torch as a CPU-only build sees itself: no CUDA compiled in, no GPU, no Apple GPU."""
    monkeypatch.setattr(models.torch.version, "cuda", None)
    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models.torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("CTX_DEVICE", raising=False)


def test_cuda_on_a_cpu_only_torch_names_the_fix_before_loading(cpu_only_torch, monkeypatch, tiny_model_dir):
    """Issue 11: this failed ten frames deep with "Torch not compiled with CUDA enabled"."""
    monkeypatch.setenv("CTX_DEVICE", "cuda")
    with pytest.raises(models.DeviceError) as err:
        load_model(str(tiny_model_dir))
    message = str(err.value)
    assert message.startswith("Device 'cuda' (CTX_DEVICE) needs a CUDA build of torch")
    assert "Devices this machine can use: cpu." in message and "make env TORCH_SPEC=torch" in message


def test_an_unknown_device_lists_the_usable_ones(cpu_only_torch):
    with pytest.raises(models.DeviceError) as err:
        models.pick_device("gpu")
    assert str(err.value) == (
        "Unknown device 'gpu': use 'cpu', 'cuda' (or 'cuda:0', 'cuda:1', …) or 'mps'. Devices this machine can use: cpu."
    )
    with pytest.raises(models.DeviceError, match="Unknown device 'meta'"):
        models.pick_device("meta")


def test_a_cuda_index_past_the_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(models.torch.version, "cuda", "12.4")
    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(models.torch.cuda, "device_count", lambda: 1)
    assert models.pick_device("cuda:0") == "cuda:0"
    with pytest.raises(models.DeviceError, match=r"'cuda:3' does not exist: this machine has 1 CUDA GPU.*cpu, cuda:0"):
        models.pick_device("cuda:3")
    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: False)
    with pytest.raises(models.DeviceError, match="has CUDA but sees no GPU"):
        models.pick_device("cuda")


def test_mps_is_used_only_with_transformerlens_setting(cpu_only_torch, monkeypatch):
    monkeypatch.delenv("TRANSFORMERLENS_ALLOW_MPS", raising=False)
    with pytest.raises(models.DeviceError, match="'mps' .*not available here"):
        models.pick_device("mps")
    monkeypatch.setattr(models.torch.backends.mps, "is_available", lambda: True)
    for asked in ("mps", None):
        with pytest.warns(UserWarning, match="running on the CPU. Set TRANSFORMERLENS_ALLOW_MPS=1"):
            assert models.pick_device(asked) == "cpu"
    monkeypatch.setenv("TRANSFORMERLENS_ALLOW_MPS", "1")
    assert models.pick_device("mps") == models.pick_device() == "mps"


@pytest.mark.parametrize("typo, suggestion", [("gpt-2", "gpt2-small"), ("GPT2-Small", "gpt2-small"), ("organsim", "organism"),
                                              ("pythia-160", "pythia-160m")])
def test_a_typo_gets_the_closest_name(typo, suggestion):
    with pytest.raises(ModelNotFoundError, match=f"Did you mean '{suggestion}'\\?"):
        models.resolve_source(typo)


def test_run_notebooks_reports_a_typo_without_traceback(capsys):
    from ctx_utils.tools import run_notebooks

    assert run_notebooks.main(["--model", "gpt-2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown model 'gpt-2', and no such folder. Did you mean 'gpt2-small'?")
    assert "Traceback" not in err


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
    assert not any(p.requires_grad for p in model.parameters())  # frozen: reading a weight gives no grad warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        float(model.b_O[0] @ model.W_in[1][:, 0])
    tokens = model.to_tokens(" the")
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id


def test_a_local_folder_choice_loads_and_names_its_results_folder(tiny_model_dir, tmp_path, monkeypatch):
    from ctx_utils.results import results_dir

    monkeypatch.setenv("CTX_RESULTS", str(tmp_path))
    choice = choose_model(str(tiny_model_dir))
    assert load_model(choice.name, device="cpu").cfg.n_layers == 2
    assert results_dir(choice.name) == tmp_path / tiny_model_dir.name
