"""``python -m ctx_utils.tools.verify``: the comparison with the authors' released numbers, proved offline.

A small fixture model (ctx_utils/fixtures.py) stands in for GPT-2: the kit's own step functions write its
"released" data in the authors' format (data/paper-data/README.md §3), verify compares the model against it and
passes; changing one number in any compared step makes it fail and name that step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ctx_utils import ablate, activations, heads, neurons
from ctx_utils.fixtures import sample_texts
from ctx_utils.models import load_model
from ctx_utils.results import save_json
from ctx_utils.tools import verify

LAYER, PER_LAYER, N_PROMPTS = 2, 2, 5


@pytest.fixture(scope="module")
def model(gpt2_fixture_dir):
    return load_model(str(gpt2_fixture_dir), device="cpu")


def _top_prompts(model, texts: list[str], layer: int, neuron: int) -> tuple[list[str], list[float], list[int]]:
    """The ``N_PROMPTS`` texts on which the neuron fires most at the last token (no BOS), as the authors cut them."""
    seqs = [model.to_tokens(t, prepend_bos=False)[0].tolist() for t in texts]
    acts = activations.last_token_activations(model, seqs, layer, neuron)
    best = acts.argsort(descending=True)[:N_PROMPTS].tolist()
    return [texts[i] for i in best], [float(acts[i]) for i in best], [len(seqs[i]) for i in best]


def write_release(model, folder: Path) -> Path:
    """The fixture's data in the released layout, made with the kit's plain step functions."""
    chosen = neurons.select_next_token_neurons(model, [LAYER], PER_LAYER)
    save_json(folder / "neurons.json", {"layers_scanned": [LAYER], "num_neurons_per_layer": PER_LAYER, "rejected_neurons": [],
                                        "neurons": [{k: n[k] for k in ("layer", "neuron", "token", "congruence")} for n in chosen]})
    pool = {"train": sample_texts("train")[:16], "test": sample_texts("test")[:16]}
    ablation = []
    for split, texts in pool.items():
        entries, tops = [], []
        for n in chosen:
            kept, acts, lengths = _top_prompts(model, texts, n["layer"], n["neuron"])
            docs = [{"og_act": a, "n_tokens": m, "passed_length_filter": True} for a, m in zip(acts, lengths)]
            entries.append({"layer": n["layer"], "neuron": n["neuron"], "token": n["token"], "prompts": kept,
                            "max_activating_docs": docs})
            attr = heads.head_attributions(model, kept, n["layer"], n["neuron"], include_same_layer=False)
            top3 = attr.topk(3, dim=1).indices.tolist()
            tops.append({"layer": n["layer"], "neuron": n["neuron"], "top3_heads": top3})
            if split == "test":
                head = top3[0][0]
                layer_h, index_h = divmod(head, model.cfg.n_heads)
                normal = ablate.token_probabilities(model, kept, n["token"])
                ablated = ablate.token_probabilities(model, kept, n["token"], [(layer_h, index_h)])
                ablation.append({"layer": n["layer"], "neuron": n["neuron"], "head": head, "head_layer": layer_h,
                                 "head_index": index_h, "token": n["token"], "test_prompt_idx": list(range(len(kept))),
                                 "prob_normal": normal.tolist(), "prob_ablated": ablated.tolist()})
        save_json(folder / f"{split}_prompts.json", {"act_ratio": 0.8, "neurons": entries})
        save_json(folder / f"head_attributions_{split}.json", {"neurons": tops})
    save_json(folder / "ablation.json", {"pairs": ablation})
    return folder


@pytest.fixture(scope="module")
def release(model, tmp_path_factory):
    return write_release(model, tmp_path_factory.mktemp("release") / "fixture")


def _edit(folder: Path, name: str, change) -> None:
    data = json.loads((folder / name).read_text())
    change(data)
    (folder / name).write_text(json.dumps(data))


def test_verify_agrees_with_a_release_the_kit_wrote(model, release, gpt2_fixture_dir, capsys):
    reports = verify.verify(model, release)
    assert [r.agree == r.total for r in reports] == [True] * 4
    assert [r.total for r in reports] == [PER_LAYER, 2 * PER_LAYER * N_PROMPTS, 2 * PER_LAYER * N_PROMPTS, PER_LAYER * N_PROMPTS]
    assert verify.main([str(gpt2_fixture_dir), "--data", str(release)]) == 0
    out = capsys.readouterr().out
    assert "step 6 (ablation): 10 of 10 records" in out and "Everything agrees." in out


PERTURBATIONS = {  # step → (file, one number changed)
    "step 1": ("neurons.json", lambda d: d["neurons"][1].update(congruence=d["neurons"][1]["congruence"] * 1.01)),
    "step 2": ("test_prompts.json", lambda d: d["neurons"][0]["max_activating_docs"][3].update(
        og_act=d["neurons"][0]["max_activating_docs"][3]["og_act"] * 1.5)),
    "step 3": ("head_attributions_train.json", lambda d: d["neurons"][1]["top3_heads"][2].reverse()),
    "step 6": ("ablation.json", lambda d: d["pairs"][0]["prob_ablated"].__setitem__(4, d["pairs"][0]["prob_ablated"][4] + 1e-3)),
}


@pytest.mark.parametrize("step", sorted(PERTURBATIONS))
def test_one_changed_number_fails_that_step(model, release, tmp_path, gpt2_fixture_dir, capsys, step):
    folder = tmp_path / "fixture"
    folder.mkdir()
    for path in release.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    name, change = PERTURBATIONS[step]
    _edit(folder, name, change)
    reports = {r.step.split(" (")[0]: r for r in verify.verify(model, folder)}
    assert reports[step].total - reports[step].agree == 1  # exactly the changed item
    assert all(r.agree == r.total for s, r in reports.items() if s != step)
    assert verify.main([str(gpt2_fixture_dir), "--data", str(folder)]) == 1
    assert f"Differences in: {step}" in capsys.readouterr().out


def test_offline_it_stops_at_once_with_the_usual_message(monkeypatch, capsys):
    from ctx_utils import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "is_cached", lambda repo_id: False)
    start = time.monotonic()
    assert verify.main(["gpt2-small"]) == 2
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert "hub is unreachable" in err and "Traceback" not in err


def test_a_model_without_released_data_is_named(capsys, tmp_path):
    assert verify.main(["organism", "--data", str(tmp_path)]) == 2
    assert "holds no released data" in capsys.readouterr().err
