"""Shared test set-up: offline, one torch thread, and a tiny randomly initialised GPT-2 folder."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CTX_TORCH_THREADS", "1")
# OpenMP and BLAS (numpy's, torch's at start) in this process and every kernel or script a test starts: one thread
os.environ.setdefault("OMP_NUM_THREADS", os.environ["CTX_TORCH_THREADS"])

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

#: A subset of the authors' original GPT-2-small files (tests/data/paper-data-raw/README.md); the cleaned data
#: itself ships in data/paper-data/ and is found by ctx_utils.paper_data with no setting.
PAPER_RAW = Path(__file__).resolve().parent / "data" / "paper-data-raw"


def save_tiny_gpt2(folder: Path, n_layer: int = 2, n_head: int = 4, n_embd: int = 32, seed: int = 0) -> Path:
    """Save a randomly initialised GPT-2 with a small word-level tokenizer as a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["the", "cat", "sat", "on", "mat", "for", "research", "purposes", "only", "as", "early", "such"]
    vocab = {"<|endoftext|>": 0, **{f"Ġ{w}": i + 1 for i, w in enumerate(words)}, **{w: i + 1 + len(words) for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special, eos_token=special, unk_token=special, pad_token=special)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """torch on CTX_TORCH_THREADS (1 unless set) threads in every test process, as loading a model would set it:
    two test workers sharing two cores must not fight over them."""
    from ctx_utils.models import pin_torch_threads

    pin_torch_threads()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 (2 layers, 4 heads, d_model 32) saved as a Hugging Face folder."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny random GPT-2 loaded through the kit's loader (TransformerBridge, compatibility mode)."""
    from ctx_utils.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


# ------------------------------------------- byte-level BPE fixtures: GPT-2 and Pythia (GPT-NeoX) architecture


@pytest.fixture(scope="session")
def gpt2_fixture_dir() -> Path:
    """A random 3-layer ``GPT2LMHeadModel`` folder with a byte-level BPE tokenizer (ctx_utils.fixtures, cached)."""
    from ctx_utils.fixtures import fixture_dir

    return fixture_dir("gpt2")


@pytest.fixture(scope="session")
def pythia_fixture_dir() -> Path:
    """A random 3-layer ``GPTNeoXForCausalLM`` folder (rotary, parallel residual) with a byte-level BPE tokenizer."""
    from ctx_utils.fixtures import fixture_dir

    return fixture_dir("pythia")


@pytest.fixture(scope="session", params=["gpt2", "pythia"])
def bpe_fixture(request):
    """Each fixture architecture in turn: ``(arch, folder, bridge, hf_model)``, both models loaded once, on CPU.

    ``bridge`` comes from the kit's loader (compatibility mode); ``hf_model`` is the same folder loaded by
    Hugging Face alone, for independent reference computations.
    """
    from transformers import AutoModelForCausalLM

    from ctx_utils.models import load_model

    folder = request.getfixturevalue(f"{request.param}_fixture_dir")
    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return request.param, folder, load_model(str(folder), device="cpu"), hf_model


def pytest_configure(config):
    """Kernels started in this session (the slow tests', under `make test`) use CurveZMQ-encrypted sockets, so none warns
    "Kernel is running over TCP without encryption" on every notebook's line (issue 23, item 11)."""
    from ctx_utils.tools.run_notebooks import encrypt_kernels

    encrypt_kernels()
