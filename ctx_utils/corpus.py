"""Text corpora to scan for max-activating prompts: the organism's synthetic corpus, the Pile, or local files.

``load_corpus`` returns a plain list of documents (strings). The paper explains heads on pile-10k and scores
the explanations on separate, held-out Pile test documents (arXiv 2402.15055; the authors' code uses pile-10k and the first 10k Pile test documents); each corpus here has both:

* ``organism`` (and ``organism-clean``): generated on the fly from the bundled folder's seed and config (no download, identical on every machine), with a
  held-out ``test`` split from a different seed stream;
* ``pile-10k``: its ``train`` split is ``NeelNanda/pile-10k`` (the paper's); pile-10k has no test split, so
  ``test`` streams the first documents of the Pile's test split from ``monology/pile-uncopyrighted`` (the
  Pile without its copyrighted subsets: close to, not identical with, the paper's first 10k Pile test
  documents, which were never released).
"""

from __future__ import annotations

import json
from pathlib import Path

from ctx_utils.models import ORGANISMS, HubUnreachableError, hub_reachable

PILE_10K = "NeelNanda/pile-10k"
PILE_TEST = "monology/pile-uncopyrighted"
PILE_TEST_DOCS = 10_000  # the paper's test set size
SPLITS = ("train", "test")
NAMED = (*ORGANISMS, "pile-10k")  # the bundled organisms' corpora, and the paper's
LOCAL_FORMATS = (
    "a .txt file (documents separated by a blank line), a .jsonl file (one {\"text\": \"...\"} object per line) "
    "or a folder of .txt files (one document each)"
)


def check_corpus(docs: list[str]) -> None:
    """Raise a clear error for an empty corpus or one that is not a list of strings."""
    if isinstance(docs, str):
        raise ValueError("`docs` is a single string: pass a list of documents, e.g. [text].")
    if len(docs) == 0:
        raise ValueError("The corpus is empty: pass at least one document (see ctx_utils.corpus.load_corpus).")
    if not all(isinstance(d, str) for d in docs):
        raise ValueError("Every document must be a string.")


def organism_config(name: str):
    """``(CorpusConfig, seed)`` when ``name`` is the folder of an organism trained by the kit (its
    ``organism_config.json``), else None: such a folder's corpus is the one it was trained on."""
    from ctx_utils.organism.corpus import config_for

    path = Path(name).expanduser()
    return config_for(path) if path.is_dir() else None


def is_named_corpus(name: str) -> bool:
    """Whether ``name`` is a generated or hub corpus with train and test splits, not a local file or folder."""
    return name in NAMED or organism_config(name) is not None


def corpus_for(model_name: str, corpus: str = "auto") -> str:
    """The corpus to read: ``corpus`` itself; for ``auto`` the organism's own corpus for an organism (the
    bundled one, or a folder trained by ``ctx_utils.organism.train``), and pile-10k for any other model."""
    if corpus not in ("auto", ""):
        return corpus
    if model_name in ORGANISMS or organism_config(model_name) is not None:
        return model_name
    return "pile-10k"


def load_corpus(name: str = "organism", split: str = "train", max_docs: int | None = None) -> list[str]:
    """Documents of a corpus.

    ``name``: ``organism`` (synthetic, seeded; splits ``train`` and ``test``), the folder of an organism trained
    by the kit (its own corpus config and seed), ``pile-10k`` (``train``: the
    paper's pile-10k, needs the hub or its cache; ``test``: the first ``max_docs`` (default 10,000) Pile test
    documents, streamed, needs the hub), or a path to a ``.txt`` file (one document per blank-line-separated
    paragraph), a ``.jsonl`` file (a ``text`` field per line) or a folder of ``.txt`` files (one document each;
    a local source has no splits: the same documents for both). ``max_docs`` keeps the first documents only.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: choose one of {SPLITS}.")
    if name in ORGANISMS:
        from ctx_utils.organism.corpus import generate_corpus

        trained = organism_config(str(ORGANISMS[name]))  # the bundled folder's own corpus and seed
        docs = generate_corpus(split, trained[1], trained[0]) if trained else generate_corpus(split)  # clean: the default
    elif name == "pile-10k":
        docs = _load_pile_10k() if split == "train" else _load_pile_test(max_docs or PILE_TEST_DOCS)
    elif (trained := organism_config(name)) is not None:
        from ctx_utils.organism.corpus import generate_corpus

        config, seed = trained
        docs = generate_corpus(split, seed, config)
    elif Path(name).expanduser().exists():
        docs = _load_local(Path(name).expanduser())
    elif Path(name).suffix or "/" in name:
        raise ValueError(f"Corpus {name!r}: no such file or folder. A local corpus is {LOCAL_FORMATS}.")
    else:
        raise ValueError(
            f"Unknown corpus {name!r}: use 'organism', 'pile-10k', or the path of a .txt/.jsonl file or a folder of .txt files."
        )
    docs = docs[:max_docs] if max_docs is not None else docs
    if not docs:
        raise ValueError(f"Corpus {name!r} ({split}) holds no documents: check the file or folder.")
    return docs


def _load_pile_10k() -> list[str]:
    import datasets

    try:
        ds = datasets.load_dataset(PILE_10K, split="train")
    except Exception as err:  # datasets raises several types when offline; all mean the same to a user
        if not hub_reachable():
            raise HubUnreachableError(
                f"Cannot load {PILE_10K}: the Hugging Face hub is unreachable and the dataset is not cached. "
                "Use the 'organism' corpus offline."
            ) from None
        raise RuntimeError(f"Loading {PILE_10K} failed: {err}") from err
    return list(ds["text"])


def _load_pile_test(n_docs: int) -> list[str]:
    """The first ``n_docs`` documents of the Pile's test split, streamed (only what is read is downloaded)."""
    import itertools

    if not hub_reachable():  # streaming has no cache: fail in seconds, not after the client's retries
        raise HubUnreachableError(
            f"Cannot stream the Pile test split ({PILE_TEST}): the Hugging Face hub is unreachable. Use the "
            "'organism' corpus offline, or give a local .txt/.jsonl file or folder of held-out documents."
        )
    import datasets

    try:
        stream = datasets.load_dataset(PILE_TEST, split="test", streaming=True)
        return [row["text"] for row in itertools.islice(stream, n_docs)]
    except Exception as err:
        raise RuntimeError(f"Streaming the test split of {PILE_TEST} failed: {err}") from err


def _load_local(path: Path) -> list[str]:
    """The documents of a local corpus (:data:`LOCAL_FORMATS`); anything else is refused, naming the file."""
    if path.is_dir():
        return [_read_text(p) for p in sorted(path.glob("*.txt"))]
    suffix = path.suffix.lower()
    if suffix not in {".txt", ".jsonl"}:
        raise ValueError(f"{path}: {suffix or 'a file without extension'} is not a corpus format. A local corpus is {LOCAL_FORMATS}.")
    text = _read_text(path)
    if suffix == ".jsonl":
        return _jsonl_documents(path, text)
    return [doc.strip() for doc in text.split("\n\n") if doc.strip()]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}): save it as UTF-8.") from None


def _jsonl_documents(path: Path, text: str) -> list[str]:
    """One document per non-blank line, each ``{"text": str, ...}``; errors give the file and the line's number."""
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):  # counted before blank lines are skipped
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg}). Each line holds one object such as {{\"text\": \"...\"}}.") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            found = f"keys {sorted(row)[:10]}" if isinstance(row, dict) else f"a JSON {type(row).__name__}"
            raise ValueError(f"{path}, line {number}: expected an object with a string field \"text\", found {found}.")
        docs.append(row["text"])
    return docs
