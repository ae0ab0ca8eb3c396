"""The authors' released data, shipped in data/paper-data/: the kit reproduces every published digit from it, and the
download path converts the authors' original files into the same data (tested offline on a three-neuron subset of
those files, tests/data/paper-data-raw/; the network is never contacted)."""

import json
import re
import os
import pickle
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import PAPER_RAW as RAW
from ctx_utils import paper_data as pd
from ctx_utils.results import SCHEMA_VERSION, load_json
from ctx_utils.settings import KIT_ROOT

DATA = pd.SHIPPED_DIR
RAW_NEURONS = {(9, 1360), (10, 1687), (11, 2957)}  # the neurons of the raw subset (its README)

# data/paper-data/README.md §4, as printed there.
PUBLISHED = {
    "gpt2-small": dict(n_pairs=207, mean_E="0.6388", std_E="0.1781", skew="0.210", skewtest_p="0.104", ge08=44, eq1=6,
                       hist=[0, 0, 4, 11, 27, 53, 43, 25, 21, 23], first10=("0.6488", "0.2066"), n_abl=(207, 199),
                       active=("0.0192", "0.0073"), inactive=("0.0075", "0.0005"), ks="0.24186", ks_p="1.0247e-05"),
    "gpt2-medium": dict(n_pairs=263, mean_E="0.6164", std_E="0.1590", skew="0.240", skewtest_p="0.054", ge08=36, eq1=4,
                        hist=[0, 0, 3, 11, 44, 70, 64, 35, 22, 14], first10=("0.6126", "0.1861"), n_abl=(263, 257),
                        active=("0.0097", "0.0028"), inactive=("0.0003", "0.0000"), ks="0.33114", ks_p="3.6875e-13"),
    "gpt2-large": dict(n_pairs=612, mean_E="0.6020", std_E="0.1707", skew="0.228", skewtest_p="0.011", ge08=94, eq1=6,
                       hist=[1, 4, 10, 40, 104, 172, 122, 65, 52, 42], first10=("0.6063", "0.2063"), n_abl=(610, 598),
                       active=("0.0063", "0.0022"), inactive=("0.0011", "0.0002"), ks="0.29317", ks_p="2.0895e-23"),
}


@pytest.fixture(scope="module")
def released():
    return pd.load_paper_data()  # no path, no variable: the shipped copy


@pytest.fixture(scope="module")
def published_summary(released):
    return pd.summary(released)


def local_reader(folder: Path) -> pd.Reader:
    """A reader over a local mirror of the authors' ``neuron_groups/`` (:func:`ctx_utils.paper_data.url_reader`'s stand-in)."""
    return lambda path: (folder / path).read_bytes()


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """GPT-2 small 'downloaded' from the subset of the authors' files, with pickle loading forbidden."""
    raw = local_reader(RAW / "gpt2-small")

    def read(path: str) -> bytes:  # the licence sits beside the mirror, as LICENSE-original
        return (RAW / "LICENSE-original").read_bytes() if path == "LICENSE" else raw(path)

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle must never be loaded")

    dest = tmp_path_factory.mktemp("download")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("load", "loads", "Unpickler"):
            mp.setattr(pickle, name, no_pickle)
        pd.download_paper_data(["gpt2-small"], dest, read=read)
    return dest


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_statistics_equal_the_published_digits(published_summary, model):
    s, want = published_summary["models"][model], PUBLISHED[model]
    assert s["n_pairs"] == want["n_pairs"]
    assert (f"{s['mean_E']:.4f}", f"{s['std_E']:.4f}") == (want["mean_E"], want["std_E"])
    assert (f"{s['skew']:.3f}", f"{s['skewtest_p']:.3f}") == (want["skew"], want["skewtest_p"])
    assert (s["n_E_ge_0_8"], s["n_E_eq_1"], s["histogram"]) == (want["ge08"], want["eq1"], want["hist"])
    assert (f"{s['first10_mean_E']:.4f}", f"{s['first10_std_E']:.4f}") == want["first10"]
    assert (s["n_active"], s["n_inactive"]) == want["n_abl"]
    assert (f"{s['active_mean']:.4f}", f"{s['active_median']:.4f}") == want["active"]
    assert (f"{s['inactive_mean']:.4f}", f"{s['inactive_median']:.4f}") == want["inactive"]
    assert (f"{s['ks_statistic']:.5f}", f"{s['ks_p']:.4e}") == (want["ks"], want["ks_p"])


def test_dropping_one_class_pairs_changes_the_statistics(released):
    """The Feb-2024 convention (drop pairs with one class) is a different statistic, so the choice matters."""
    kept = pd.pair_scores(released["gpt2-small"], missing="drop")
    dropped = [s for s in kept if s["E"] is None]
    assert 0 < len(dropped) < len(kept)


@pytest.mark.parametrize("model, pair, label, token, e", [
    ("gpt2-large", (31, 3621, 538), "L26.H18", " only", "0.882"),
    ("gpt2-large", (34, 4410, 604), "L30.H4", " as", "1.000"),
    ("gpt2-large", (34, 4410, 671), "L33.H11", " as", "0.889"),
    ("gpt2-small", (10, 1687, 22), "L1.H10", " out", "1.000"),
    ("gpt2-medium", (21, 2470, 322), "L20.H2", " only", "0.900"),
])
def test_case_studies_by_identifier(released, model, pair, label, token, e):
    case = pd.find_pair(released[model], *pair)
    assert (case["head_label"], case["token"], f"{case['E']:.3f}") == (label, token, e)
    assert case["explanation"] and all(x.endswith(token) for x in case["active_examples"])


def test_the_purposes_only_head_is_explained_by_purposes(released):
    case = pd.find_pair(released["gpt2-large"], 31, 3621, 538)
    assert "purpose" in case["explanation"].lower(), case["explanation"]


def test_unknown_pair_names_the_flat_index(released):
    with pytest.raises(pd.PaperDataError, match="flat"):
        pd.find_pair(released["gpt2-large"], 31, 3621, 26)


def _of_subset(rows: list[dict]) -> list[dict]:
    return [r for r in rows if (r["layer"], r["neuron"]) in RAW_NEURONS]


def test_conversion_of_the_original_files_equals_the_shipped_folder(downloaded, released):
    mine, theirs = pd.load_model_data(downloaded / "gpt2-small"), released["gpt2-small"]
    assert len(mine.explanations) == 8 and len(mine.classifications) == 160
    assert mine.explanations == _of_subset(theirs.explanations)  # incl. shared explanations: last response wins
    assert mine.classifications == _of_subset(theirs.classifications)  # incl. duplicated requests: run 2 wins
    assert any(r["discarded_answers"] and r["discarded_answers"] != [r["answer"]] for r in mine.classifications)
    for name in ("neurons.json", "train_prompts.json", "test_prompts.json", "head_attributions_test.json"):
        assert mine.read(name)["neurons"] == _of_subset(theirs.read(name)["neurons"]), name
    assert mine.ablation is None and not list(downloaded.rglob("*.pkl"))
    assert (downloaded / "LICENSE-original").read_bytes() == (RAW / "LICENSE-original").read_bytes()
    assert (DATA / "LICENSE-original").read_bytes() == (RAW / "LICENSE-original").read_bytes()


def test_conversion_gives_the_shipped_scores(downloaded, released):
    mine = pd.pair_scores(pd.load_model_data(downloaded / "gpt2-small"))
    assert mine == _of_subset(pd.pair_scores(released["gpt2-small"]))
    assert pd.summary(pd.load_paper_data(downloaded))["models"]["gpt2-small"]["ks_statistic"] is None  # no pickle


def test_conversion_rejects_files_that_do_not_match(tmp_path):
    raw = local_reader(RAW / "gpt2-small")
    results = pd.RAW_FILES["gpt2-small"]["explain_results"]

    def tampered(path: str) -> bytes:  # drop the last explanation response
        data = raw(path)
        return b"\n".join(data.splitlines()[:-1]) if path == results else data

    with pytest.raises(pd.PaperDataError, match="does not match"):
        pd.convert_raw("gpt2-small", tampered, tmp_path / "gpt2-small")


def test_no_pickle_is_ever_downloaded():
    paths = [p for files in pd.RAW_FILES.values() for v in files.values() for p in ([v] if isinstance(v, str) else v)]
    assert paths and not any(p.endswith(".pkl") for p in paths)
    assert "import pickle" not in Path(pd.__file__).read_text()


def test_offline_download_fails_fast_and_says_how_to_get_the_data(tmp_path):
    start = time.monotonic()
    with pytest.raises(pd.PaperDataError, match="CTX_PAPER_DATA") as err:  # a closed local port: refused at once
        pd.download_paper_data(["gpt2-small"], tmp_path, read=pd.url_reader("http://127.0.0.1:9/", timeout=2))
    assert time.monotonic() - start < 5
    assert "--download" in str(err.value) and not list(tmp_path.iterdir())


def test_default_download_goes_through_the_url_reader(tmp_path, monkeypatch):
    asked = []

    def offline(url, timeout):
        asked.append((url, timeout))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(pd.PaperDataError, match="no network in tests"):
        pd.download_paper_data(dest=tmp_path)
    assert asked == [(pd.RAW_BASE_URL + "LICENSE", 20.0)] and pd.COMMIT in asked[0][0]


def test_download_refuses_models_without_complete_raw_files(tmp_path):
    with pytest.raises(pd.PaperDataError, match="gpt2-large"):
        pd.download_paper_data(["gpt2-large"], tmp_path, read=lambda path: b"")


def _unseen_model_folder(root: Path, with_ablation: bool) -> Path:
    """A folder of the layout holding a 30-pair subset of GPT-2 small under a name the kit has never seen."""
    src, dest = DATA / "gpt2-small", root / "my-model"
    dest.mkdir(parents=True)
    pairs = [json.loads(line) for line in (src / "explanations.jsonl").read_text().splitlines()[:30]]
    keys = {(p["layer"], p["neuron"], p["head"]) for p in pairs}
    rows = [r for r in map(json.loads, (src / "classifications.jsonl").read_text().splitlines())
            if (r["layer"], r["neuron"], r["head"]) in keys]
    (dest / "explanations.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (dest / "classifications.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if with_ablation:
        ablation = json.loads((src / "ablation.json").read_text())
        (dest / "ablation.json").write_text(json.dumps({"pairs": ablation["pairs"][:30]}))
    return dest


@pytest.mark.parametrize("with_ablation", [False, True])
def test_cli_json_on_an_unseen_model(tmp_path, capsys, with_ablation):
    _unseen_model_folder(tmp_path, with_ablation)
    assert pd.main(["--data", str(tmp_path), "--json", "--out", str(tmp_path / "summary.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "summary.json").read_text())
    assert printed["schema_version"] == SCHEMA_VERSION and list(printed["models"]) == ["my-model"]
    s = printed["models"]["my-model"]
    assert {"n_pairs", "mean_E", "std_E", "skew", "skewtest_p", "ks_statistic", "ks_p"} <= s.keys()
    assert s["n_pairs"] == 30 and 0 < s["mean_E"] < 1
    assert (s["ks_statistic"] is None) == (not with_ablation) and (s["ks_p"] is None) == (not with_ablation)


def test_cli_table(tmp_path, capsys):
    _unseen_model_folder(tmp_path, with_ablation=False)
    assert pd.main(["--data", str(tmp_path)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["model", "pairs", "mean"] and row.split()[:2] == ["my-model", "30"]


def test_cli_bad_input_exits_2_without_traceback(tmp_path):
    """A real process: a missing folder gives exit code 2 and one sentence, no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "CTX_TORCH_THREADS"}  # paper_data needs no torch: start faster
    done = subprocess.run([sys.executable, "-m", "ctx_utils.paper_data", "--data", str(tmp_path / "missing"), "--json"],
                          capture_output=True, text=True, cwd=KIT_ROOT, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "No folder" in done.stderr and "CTX_PAPER_DATA" in done.stderr and not done.stdout


def test_cli_wrong_layout_exits_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not data")
    assert pd.main(["--data", str(tmp_path)]) == 2
    assert "no model folder" in capsys.readouterr().err


def test_broken_file_is_named(tmp_path):
    folder = _unseen_model_folder(tmp_path, with_ablation=False)
    (folder / "classifications.jsonl").write_text("{not json\n")
    with pytest.raises(pd.PaperDataError, match="classifications.jsonl is not valid"):
        pd.load_paper_data(tmp_path)


def test_missing_fields_are_named(tmp_path):
    folder = _unseen_model_folder(tmp_path, with_ablation=False)
    (folder / "classifications.jsonl").write_text(json.dumps({"layer": 9, "neuron": 5, "head": 88}) + "\n")
    with pytest.raises(pd.PaperDataError, match="lacks the fields.*answer"):
        pd.load_paper_data(tmp_path)


def test_environment_variable_chooses_the_folder(tmp_path, monkeypatch):
    _unseen_model_folder(tmp_path, with_ablation=False)
    monkeypatch.setenv("CTX_PAPER_DATA", str(tmp_path))
    assert list(pd.load_paper_data()) == ["my-model"]
    monkeypatch.setenv("CTX_PAPER_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(pd.PaperDataError, match="--download"):
        pd.resolve_data_dir()


def test_without_the_variable_the_shipped_copy_is_used(monkeypatch):
    monkeypatch.delenv("CTX_PAPER_DATA", raising=False)
    assert pd.resolve_data_dir() == pd.SHIPPED_DIR == KIT_ROOT / "data" / "paper-data"
    assert list(pd.load_paper_data()) == ["gpt2-large", "gpt2-medium", "gpt2-small"]


def test_without_the_shipped_copy_only_the_download_cache_is_searched(tmp_path, monkeypatch):
    """With the shipped copy deleted, CTX_PAPER_DATA unset and an empty cache, the data is not found and the
    message says how to restore or download it."""
    monkeypatch.delenv("CTX_PAPER_DATA", raising=False)
    monkeypatch.setattr(pd, "SHIPPED_DIR", tmp_path / "deleted")
    monkeypatch.setattr(pd, "cache_dir", lambda: tmp_path / "empty-cache")
    with pytest.raises(pd.PaperDataError, match="git checkout -- data/paper-data.*--download"):
        pd.resolve_data_dir()
    _unseen_model_folder(tmp_path / "empty-cache", with_ablation=False)
    assert pd.resolve_data_dir() == tmp_path / "empty-cache"


def test_compare_with_kit_finds_the_shared_pairs(tmp_path, released):
    """A kit result that re-found 2 of the authors' pairs (and one of its own) reports exactly those."""
    from ctx_utils.results import save_json

    small = released["gpt2-small"]
    found = small.explanations[:2] + [{**small.explanations[2], "head": 5, "head_layer": 0, "head_index": 5}]
    save_json(tmp_path / "neurons.json", {"model": "gpt2-small", "neurons": [
        {"layer": p["layer"], "neuron": p["neuron"], "token": p["token"], "congruence": 1.0} for p in found]})
    save_json(tmp_path / "heads.json", {"pairs": [{k: p[k] for k in ("layer", "neuron", "token", "head", "head_layer", "head_index")}
                                                  for p in found]})
    save_json(tmp_path / "scores.json", {"pairs": [{"layer": p["layer"], "neuron": p["neuron"], "head": p["head"], "E": 0.5}
                                                   for p in found], "summary": {}})
    result = pd.compare_with_kit(tmp_path, small)
    assert result["kit_pairs"] == 3 and result["paper_pairs"] == 207 and len(result["shared_pairs"]) == 2
    paper_e = {(s["layer"], s["neuron"], s["head"]): s["E"] for s in pd.pair_scores(small)[:2]}
    assert sorted(s["paper_E"] for s in result["shared_pairs"]) == sorted(paper_e.values())
    assert all(s["kit_E"] == 0.5 for s in result["shared_pairs"])
    assert len(result["shared_neurons"]) == len({(p["layer"], p["neuron"]) for p in found})


def test_committed_summary_is_up_to_date(published_summary):
    path = KIT_ROOT / "results" / "paper-data" / "summary.json"
    assert path.exists(), f"{path} is missing: run notebooks/07_paper_results.ipynb"
    assert load_json(path) == json.loads(json.dumps(published_summary))  # the current schema, too


def test_the_shipped_readme_states_the_real_file_sizes():
    """data/paper-data/README.md §3 gives every file's size in bytes and the total: they are the shipped files'."""
    text = (DATA / "README.md").read_text(encoding="utf-8")
    models = ("gpt2-small", "gpt2-medium", "gpt2-large")
    rows = re.findall(r"^\| `(\w+\.jsonl?)` \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|", text, re.MULTILINE)
    stated = {(m, name): int(size.replace(",", "")) for name, *sizes in rows for m, size in zip(models, sizes)}
    actual = {(m, p.name): p.stat().st_size for m in models for p in (DATA / m).iterdir()}
    assert stated == actual
    total = re.search(r"about 13 MB \(([\d,]+) bytes of data\)", text).group(1)
    assert int(total.replace(",", "")) == sum(actual.values())


def test_download_says_how_to_use_the_fresh_copy(downloaded, monkeypatch, capsys):
    monkeypatch.setattr(pd, "download_paper_data", lambda: downloaded)  # the network is never contacted
    assert pd.main(["--download"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split()[:2] == ["gpt2-small", "8"] and f"CTX_PAPER_DATA={downloaded}" in err
