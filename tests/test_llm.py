"""The LLM client against a fake OpenAI-compatible server on loopback, through the real ``openai`` package."""

from __future__ import annotations

import json
import logging
import socket
import time
import traceback

import pytest
from fake_openai_server import FakeOpenAIServer

from ctx_utils.llm import HIDDEN, BudgetExceeded, LLMClient, LLMNotConfigured, LLMRequestFailed, parse_yes_no

KEY = "sk-test-SECRET123"


@pytest.fixture(autouse=True)
def no_llm_environment(monkeypatch):
    """Tests never see a learner's real key, endpoint or cache."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CTX_LLM_MODEL", "CTX_LLM_CACHE", "CTX_LLM_TOKEN_BUDGET"):
        monkeypatch.delenv(name, raising=False)


def make_client(server: FakeOpenAIServer, cache, **kwargs) -> LLMClient:
    settings = {"api_key": KEY, "model": "fake-gpt", "timeout": 2.0, "max_retries": 3, "backoff_s": 0.01}
    return LLMClient(base_url=server.base_url, cache_dir=cache, **{**settings, **kwargs})


def test_no_key_raises_not_configured():
    with pytest.raises(LLMNotConfigured, match="OPENAI_API_KEY"):
        LLMClient()


def test_environment_configures_the_client(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("CTX_LLM_MODEL", "local-model")
    monkeypatch.setenv("CTX_LLM_CACHE", str(tmp_path))
    client = LLMClient()
    assert (client.model, client.base_url, client.cache_dir) == ("local-model", "http://127.0.0.1:9/v1", tmp_path)


@pytest.mark.parametrize(
    "text, expected",
    [("Yes", True), ("no", False), (" YES\n", True), ("No ", False), ("Yes.", None), ("Maybe", None), ("", None), ("Yes, it is", None)],
)
def test_parse_yes_no_is_strict(text, expected):
    assert parse_yes_no(text) is expected


def test_second_run_is_served_from_the_cache(tmp_path):
    with FakeOpenAIServer(answer=lambda p: f"echo {len(p)}") as server:
        first = [make_client(server, tmp_path).complete(f"prompt {i}", max_tokens=5) for i in range(3)]
        assert len(server.requests) == 3 and not any(c.cached for c in first)
        again = make_client(server, tmp_path)  # a fresh client: as in a rerun of the notebook
        second = [again.complete(f"prompt {i}", max_tokens=5) for i in range(3)]
        assert len(server.requests) == 3, "a cached request was sent again"
        assert all(c.cached for c in second) and [c.text for c in second] == [c.text for c in first]
        assert again.cache_hits == 3 and again.tokens_used == 0
        again.complete("prompt 0", max_tokens=6)  # a different request (max_tokens) is not a cache hit
        assert len(server.requests) == 4
    assert len(list(tmp_path.glob("*.json"))) == 4


def test_retries_on_429_and_500_then_succeeds(tmp_path, caplog):
    with FakeOpenAIServer(answer=lambda p: "Yes") as server:
        server.plan = [429, 500, 503]
        with caplog.at_level(logging.INFO, logger="ctx_utils.llm"):
            assert make_client(server, tmp_path).complete("q", max_tokens=1).text == "Yes"
        assert len(server.requests) == 4
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 3


def test_gives_up_after_bounded_retries(tmp_path):
    with FakeOpenAIServer() as server:
        server.fail_from = 0
        with pytest.raises(LLMRequestFailed, match="after 3 attempts"):
            make_client(server, tmp_path, max_retries=2).complete("q", max_tokens=1)
        assert len(server.requests) == 3


def test_no_retry_on_auth_error(tmp_path):
    with FakeOpenAIServer() as server:
        server.plan = [401]
        with pytest.raises(LLMRequestFailed, match="401"):
            make_client(server, tmp_path).complete("q", max_tokens=1)
        assert len(server.requests) == 1


def test_timeout_is_retried(tmp_path):
    with FakeOpenAIServer(answer=lambda p: "No") as server:
        server.plan = [("sleep", 1.0)]
        client = make_client(server, tmp_path, timeout=0.25)
        assert client.complete("q", max_tokens=1).text == "No"
        assert len(server.requests) == 2


def test_unparsed_answers_are_counted_and_logged(tmp_path, caplog):
    replies = iter(["Yes", "no ", "Maybe", "YES.", " yes\n"])
    with FakeOpenAIServer(answer=lambda p: next(replies)) as server:
        client = make_client(server, tmp_path)
        with caplog.at_level(logging.WARNING, logger="ctx_utils.llm"):
            answers = [client.ask_yes_no(f"question {i}") for i in range(5)]
    assert answers == [True, False, None, None, True]
    unparsed = [r.getMessage() for r in caplog.records if "Unparsed" in r.getMessage()]
    assert len(unparsed) == 2 and "'Maybe'" in unparsed[0]


def test_budget_stops_before_it_is_exceeded(tmp_path):
    with FakeOpenAIServer() as server:
        client = make_client(server, tmp_path, token_budget=60)
        client.complete("short question", max_tokens=1)  # ~15 tokens estimated, ~10 used
        with pytest.raises(BudgetExceeded, match="token budget"):
            client.complete("x" * 300, max_tokens=1)  # ~100 tokens estimated: refused before sending
        assert len(server.requests) == 1 and client.tokens_used <= 60
        assert client.complete("short question", max_tokens=1).cached  # what was done stays available


def test_interrupted_run_resumes_without_repeating_requests(tmp_path):
    prompts = [f"prompt {i}" for i in range(6)]
    with FakeOpenAIServer() as server:
        server.fail_from = 3  # the endpoint breaks after three answers
        client = make_client(server, tmp_path, max_retries=1)
        with pytest.raises(LLMRequestFailed):
            for p in prompts:
                client.complete(p, max_tokens=1)
        assert len(server.requests) == 3 + 2  # three answers, then the failing request and its one retry
        server.fail_from = None  # "fixed"
        before = len(server.requests)
        resumed = make_client(server, tmp_path)
        results = [resumed.complete(p, max_tokens=1) for p in prompts]
        assert len(server.requests) - before == 3, "only the three missing requests should be sent"
        assert [r.cached for r in results] == [True] * 3 + [False] * 3
        sent = [r["messages"][0]["content"] for r in server.requests[before:]]
        assert sent == prompts[3:]


def test_key_never_leaks(tmp_path, caplog):
    with FakeOpenAIServer(answer=lambda p: "Yes") as server, caplog.at_level(logging.DEBUG):
        client = make_client(server, tmp_path)
        client.complete("fine", max_tokens=1)
        server.plan = [500, 401]  # a retry is logged, then the 401 body quotes the key back
        with pytest.raises(LLMRequestFailed) as info:
            client.complete("refused", max_tokens=1)
        server.plan = [503] * 4
        with pytest.raises(LLMRequestFailed) as info_retries:
            client.complete("retries", max_tokens=1)
    texts = [repr(client), str(client.__dict__.get("cache_dir"))]
    for err in (info.value, info_retries.value):
        texts += [str(err), repr(err), "".join(traceback.format_exception(err))]
    texts += [r.getMessage() for r in caplog.records]
    texts += [p.read_text() for p in tmp_path.glob("*.json")]
    assert "<hidden key>" in str(info.value), "the 401 echo should have been scrubbed, not absent"
    assert all(KEY not in t for t in texts)
    assert "SECRET123" not in "".join(texts)


def test_a_malformed_budget_is_refused_clearly(monkeypatch):
    monkeypatch.setenv("CTX_LLM_TOKEN_BUDGET", "lots")
    with pytest.raises(ValueError, match="CTX_LLM_TOKEN_BUDGET=.lots. is not valid: set it to a whole number"):
        LLMClient(api_key=KEY)


# ------------------------------------------------------------------- issue 11: short keys, empty answers, no server


@pytest.mark.parametrize("short_key", ["x", "test"])
def test_a_short_key_leaves_the_cache_unchanged(tmp_path, short_key):
    """A placeholder key for a local server ("x", "test") must not be replaced inside the saved record."""
    with FakeOpenAIServer(answer=lambda p: "the latest test text") as server:
        first = make_client(server, tmp_path, api_key=short_key).complete("explain x", max_tokens=5)
        again = make_client(server, tmp_path, api_key=short_key).complete("explain x", max_tokens=5)
        assert len(server.requests) == 1, "the rerun should be served from the cache"
    assert again.cached and again.text == first.text == "the latest test text"
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert record["response"]["text"] == "the latest test text" and record["request"]["messages"][0]["content"] == "explain x"
    assert HIDDEN not in json.dumps(record)


def test_a_record_altered_by_the_old_scrubber_is_asked_again(tmp_path):
    """Caches written before the fix hold ``te<hidden key>t`` (key "x"): a miss, not a crash or a changed text."""
    with FakeOpenAIServer(answer=lambda p: "the latest text") as server:
        client = make_client(server, tmp_path, api_key="x")
        client.complete("q", max_tokens=5)
        (path,) = tmp_path.glob("*.json")
        path.write_text(path.read_text().replace('"text"', f'"te{HIDDEN}t"'))  # what the old writer saved
        assert make_client(server, tmp_path, api_key="x").complete("q", max_tokens=5).text == "the latest text"
        path.write_text(path.read_text().replace("latest", f"la{HIDDEN}"))  # key "test" inside the answer
        assert make_client(server, tmp_path, api_key="x").complete("q", max_tokens=5).text == "the latest text"
        assert len(server.requests) == 3


def test_an_empty_answer_is_counted_and_not_cached(tmp_path, caplog):
    replies = iter(["", "  \n", "a real answer"])
    with FakeOpenAIServer(answer=lambda p: next(replies)) as server:
        client = make_client(server, tmp_path)
        with caplog.at_level(logging.WARNING, logger="ctx_utils.llm"):
            assert client.complete("q", max_tokens=5).text == ""
            assert client.complete("q", max_tokens=5).text.strip() == ""  # asked again, not replayed
        assert client.empty_answers == 2 and not list(tmp_path.glob("*.json"))
        assert sum("not cached" in r.getMessage() for r in caplog.records) == 2
        assert make_client(server, tmp_path).complete("q", max_tokens=5).text == "a real answer"
        assert len(server.requests) == 3 and len(list(tmp_path.glob("*.json"))) == 1


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_an_unreachable_server_names_the_offline_explainer(tmp_path):
    client = LLMClient(api_key=KEY, base_url=closed_port_url(), cache_dir=tmp_path, timeout=0.5, max_retries=1, backoff_s=0.01)
    with pytest.raises(LLMRequestFailed) as info:
        client.complete("q", max_tokens=1)
    message = str(info.value)
    assert "cannot be reached" in message and "after 2 attempts" in message
    assert "unset OPENAI_API_KEY" in message and "offline explainer" in message
    assert "CTX_LLM_TIMEOUT" in message and "CTX_LLM_RETRIES" in message


def test_a_stalled_server_gives_up_after_the_given_timeout_and_attempts(tmp_path):
    with FakeOpenAIServer() as server:
        server.plan = [("sleep", 0.6)] * 2
        client = make_client(server, tmp_path, timeout=0.2, max_retries=1)
        start = time.perf_counter()
        with pytest.raises(LLMRequestFailed, match=r"after 2 attempts of up to 0.2 s each.*offline explainer"):
            client.complete("q", max_tokens=1)
        assert time.perf_counter() - start < 2.0 and len(server.requests) == 2


def test_a_server_error_is_not_called_unreachable(tmp_path):
    with FakeOpenAIServer() as server:
        server.fail_from = 0
        with pytest.raises(LLMRequestFailed) as info:
            make_client(server, tmp_path, max_retries=0).complete("q", max_tokens=1)
    assert "HTTP 500" in str(info.value) and "cannot be reached" not in str(info.value)


@pytest.mark.parametrize("settings", [{"timeout": 0}, {"max_retries": -1}, {"max_retries": 1.5}])
def test_bad_timeout_or_retries_are_refused(settings):
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        LLMClient(api_key=KEY, **settings)


def test_a_short_key_is_no_secret_to_scrub_from_messages(tmp_path, caplog):
    with FakeOpenAIServer(answer=lambda p: "extra") as server, caplog.at_level(logging.WARNING, logger="ctx_utils.llm"):
        assert make_client(server, tmp_path, api_key="x").ask_yes_no("q") is None
    assert any("'extra'" in r.getMessage() for r in caplog.records), "the answer was mangled in the log line"


def test_the_cache_key_holds_the_model_and_the_server(tmp_path):
    """Another model or another server is another answer: neither may be served from the first one's cache."""
    with FakeOpenAIServer(answer=lambda p: "Yes") as server, FakeOpenAIServer(answer=lambda p: "No") as other:
        make_client(server, tmp_path).complete("same prompt", max_tokens=1)
        make_client(server, tmp_path, model="another-model").complete("same prompt", max_tokens=1)
        assert len(server.requests) == 2, "a different model was served the first model's cached answer"
        answer = make_client(other, tmp_path).complete("same prompt", max_tokens=1)
        assert len(other.requests) == 1 and answer.text == "No", "another server was served the first server's answer"


# ----------------------------------------------------------------------- issue 23, items 7 and 12: secrets, cache


@pytest.mark.parametrize("short_key", ["x", "sk-short9"])
def test_a_short_key_echoed_by_a_401_is_hidden(tmp_path, caplog, short_key):
    """Item 12: a key under 12 characters quoted back by a server's 401 reached the notebook and run.json."""
    with FakeOpenAIServer() as server, caplog.at_level(logging.DEBUG):
        server.plan = [401]
        with pytest.raises(LLMRequestFailed) as info:
            make_client(server, tmp_path, api_key=short_key).complete("q", max_tokens=1)
    message = str(info.value)
    assert "Incorrect API key provided: <hidden key>" in message
    texts = [message, "".join(traceback.format_exception(info.value)), *(r.getMessage() for r in caplog.records)]
    assert not any(f"provided: {short_key}" in t for t in texts)


def test_credentials_in_the_base_url_reach_no_output_and_no_cache(tmp_path, caplog):
    """Item 12: a user:password@ inside OPENAI_BASE_URL was printed by notebook 04 and stored in every cache file."""
    with FakeOpenAIServer(answer=lambda p: "Yes") as server, caplog.at_level(logging.DEBUG, logger="ctx_utils.llm"):
        url = server.base_url.replace("://", "://learner:pa55word@")
        client = LLMClient(api_key=KEY, base_url=url, cache_dir=tmp_path, model="fake-gpt", max_retries=1, backoff_s=0.01)
        assert client.complete("q", max_tokens=1).text == "Yes"
        server.plan = [500, 500]
        with pytest.raises(LLMRequestFailed) as info:
            client.complete("refused", max_tokens=1)
    texts = [repr(client), str(info.value), *(r.getMessage() for r in caplog.records if r.name == "ctx_utils.llm"),
             *(p.read_text() for p in tmp_path.glob("*.json"))]
    assert "<hidden>@127.0.0.1" in repr(client) and len(texts) > 3
    assert not any("pa55word" in t or "learner:" in t for t in texts)


def test_a_cache_that_cannot_be_written_loses_no_answer(tmp_path, caplog):
    """Item 7: an LLM cache on a full disk crashed the run and lost a paid answer."""
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    with FakeOpenAIServer(answer=lambda p: "Yes") as server, caplog.at_level(logging.WARNING, logger="ctx_utils.llm"):
        client = make_client(server, blocked)
        assert client.complete("one", max_tokens=1).text == "Yes"
        assert client.ask_yes_no("two") is True
    assert client.unsaved_answers == 2 and client.requests_sent == 2
    warned = [r.getMessage() for r in caplog.records if "Could not save" in r.getMessage()]
    assert len(warned) == 1 and str(blocked) in warned[0] and "CTX_LLM_CACHE" in warned[0]
