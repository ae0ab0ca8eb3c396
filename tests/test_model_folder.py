"""Issue 23, items 1 and 8: a damaged or inconsistent model folder is refused before it loads, saying what is
wrong and how to restore it, instead of running on randomly initialised weights."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from ctx_utils import models
from ctx_utils.models import ModelFolderError, load_model

ORGANISM = models.ORGANISM_DIR


@pytest.fixture
def copy(tmp_path):
    """A fresh copy of the bundled organism, to damage."""
    return shutil.copytree(ORGANISM, tmp_path / "my-organism")


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def refused(folder) -> str:
    with pytest.raises(ModelFolderError) as err:
        load_model(str(folder), device="cpu")
    message = str(err.value)
    assert str(folder) in message and "Restore the folder" in message
    return message


def test_the_bundled_organisms_and_the_fixtures_pass(gpt2_fixture_dir, pythia_fixture_dir):
    for folder in (*models.ORGANISMS.values(), gpt2_fixture_dir, pythia_fixture_dir):
        models.check_model_folder(folder)


def test_a_bundled_organism_is_restored_from_git():
    assert "`git checkout data/organism` in the kit's folder" in models._restore_hint(ORGANISM)


def test_a_tensor_missing_from_the_weights(copy):
    weights = load_file(copy / "model.safetensors")
    del weights["transformer.h.1.mlp.c_fc.weight"]
    save_file(weights, copy / "model.safetensors")
    assert "1 weights missing (transformer.h.1.mlp.c_fc.weight)" in refused(copy)


def test_empty_and_truncated_weights(copy):
    path = copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "model.safetensors is truncated or damaged" in refused(copy)
    path.write_bytes(b"")
    assert "model.safetensors is empty (0 bytes)" in refused(copy)


def test_invalid_config(copy):
    (copy / "config.json").write_text('{"model_type": "gpt2",')
    assert "config.json is not valid JSON (line 1" in refused(copy)


def test_missing_tokenizer(copy):
    (copy / "tokenizer.json").unlink()
    assert "it has no tokenizer (tokenizer.json is missing)" in refused(copy)


def test_unknown_model_type(copy):
    edit_config(copy, model_type="gpt3")
    assert "model_type is 'gpt3', which transformers" in refused(copy)


@pytest.mark.parametrize("edit, message", [
    ({"n_layer": 3}, "weights missing (transformer.h.2."),
    ({"n_layer": 1}, "weights config.json has no place for (transformer.h.1."),
    # n_head changes no weight's shape: only the organism's training record tells
    ({"n_head": 20}, "n_head is 20 but the model was trained with 40"),
    ({"vocab_size": 400}, "its tokenizer has 456 tokens but config.json's vocab_size is 400"),
    ({"vocab_size": 500}, "transformer.wte.weight (456, 160) where config.json implies (500, 160)"),
    ({"model_type": "gpt_neox"}, "none of the weights a 'gpt_neox' model has is in its weights file"),
], ids=["more-layers", "fewer-layers", "head-count", "vocab-below-tokenizer", "vocab-above-embedding", "other-architecture"])
def test_a_config_that_does_not_describe_the_weights_is_refused(copy, edit, message):
    edit_config(copy, **edit)
    assert message in refused(copy)
