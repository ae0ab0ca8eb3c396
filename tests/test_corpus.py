"""load_corpus: local files, pile-10k failing clearly offline, and bad input."""

import json

import pytest

from ctx_utils import corpus
from ctx_utils.corpus import load_corpus
from ctx_utils.models import HubUnreachableError


def test_local_text_jsonl_and_folder(tmp_path):
    txt = tmp_path / "docs.txt"
    txt.write_text("first document\nstill first\n\nsecond document\n\n\n")
    assert load_corpus(str(txt)) == ["first document\nstill first", "second document"]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ["a b", "c d"]) + "\n")
    assert load_corpus(str(jsonl), max_docs=1) == ["a b"]

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "2.txt").write_text("two")
    (folder / "1.txt").write_text("one")
    assert load_corpus(str(folder)) == ["one", "two"]


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="Unknown corpus"):
        load_corpus("no-such-corpus")
    with pytest.raises(ValueError, match="Unknown split"):
        load_corpus("organism", split="validation")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no documents"):
        load_corpus(str(empty))


def test_pile_offline_fails_clearly(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("couldn't reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(corpus, "hub_reachable", lambda: False)
    with pytest.raises(HubUnreachableError, match="organism"):
        load_corpus("pile-10k")
    with pytest.raises(HubUnreachableError, match="held-out documents"):
        load_corpus("pile-10k", split="test")


def test_pile_test_split_streams_the_first_documents(monkeypatch):
    """Online, pile-10k's test split is the start of the Pile's test split, streamed: only what is read."""
    import datasets

    calls, read = [], []

    def fake_stream(name, split, streaming):
        calls.append((name, split, streaming))
        for i in range(10**6):
            read.append(i)
            yield {"text": f"held-out document {i}"}

    monkeypatch.setattr(datasets, "load_dataset", fake_stream)
    monkeypatch.setattr(corpus, "hub_reachable", lambda: True)
    docs = load_corpus("pile-10k", split="test", max_docs=3)
    assert docs == ["held-out document 0", "held-out document 1", "held-out document 2"]
    assert calls == [(corpus.PILE_TEST, "test", True)] and len(read) == 3


def test_auto_corpus_follows_the_model():
    assert corpus.corpus_for("organism") == "organism"
    assert corpus.corpus_for("gpt2-small") == "pile-10k"
    assert corpus.corpus_for("gpt2-small", "my/held-out.txt") == "my/held-out.txt"


def test_a_bad_jsonl_line_is_named_with_its_true_line_number(tmp_path):
    """Issue 11: a line without "text" gave a bare KeyError, and blank lines shifted the numbers."""
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "one"}\n\n\n{"content": "two"}\n')
    with pytest.raises(ValueError) as info:
        load_corpus(str(path))
    assert str(info.value) == f"{path}, line 4: expected an object with a string field \"text\", found keys ['content']."
    path.write_text('{"text": "one"}\n\n{"text": "two"\n')
    with pytest.raises(ValueError, match=r"docs.jsonl, line 3: not valid JSON"):
        load_corpus(str(path))
    path.write_text('{"text": "one"}\n["two"]\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"line 2: .* found a JSON list"):
        load_corpus(str(path))
    path.write_text('{"text": "one"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"line 2: expected an object with a string field"):
        load_corpus(str(path))


@pytest.mark.parametrize("name", ["docs.json", "docs.csv", "docs"])
def test_an_unknown_extension_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_text('[{"text": "one"}]')
    with pytest.raises(ValueError, match=r"is not a corpus format\. A local corpus is a \.txt file"):
        load_corpus(str(path))


def test_a_missing_path_and_a_non_utf8_file_are_named(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        load_corpus(str(tmp_path / "typo.jsonl"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text"):
        load_corpus(str(tmp_path / "latin1.txt"))


def test_a_trained_organism_folder_scans_its_own_corpus():
    """CTX_MODEL=<organism folder> reads the corpus that folder was trained on (its organism_config.json)."""
    from ctx_utils.settings import KIT_ROOT
    from ctx_utils.organism.corpus import config_for, generate_corpus

    folder = str(KIT_ROOT / "data" / "organism")
    config, seed = config_for(folder)
    assert corpus.corpus_for(folder) == folder and corpus.is_named_corpus(folder)
    assert corpus.load_corpus(folder, "test", max_docs=5) == generate_corpus("test", seed, config)[:5]
    assert corpus.load_corpus(folder, "train", max_docs=5) != corpus.load_corpus("organism-clean", "train", max_docs=5)
