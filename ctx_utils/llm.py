"""A small, careful client for any OpenAI-compatible chat endpoint (OpenAI, or a local Ollama / vLLM server).

The paper asks GPT-4 twice per (neuron, head) pair: once to *explain* when the head is active, then once per
held-out prompt to *classify* it from the explanation alone (arXiv 2402.15055; the prompts are in its Appendix C). This module does the
asking, and only that. It is careful in the ways a class of learners with their own API keys needs:

* **Configuration** comes from arguments or the environment: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (a local
  server such as ``http://localhost:11434/v1``; any non-empty key works there) and ``CTX_LLM_MODEL``. Without a
  key, :class:`LLMClient` raises :class:`LLMNotConfigured`, which notebooks catch to run the offline explainer.
* **A disk cache**: every request is stored as one JSON file named by a hash of (model, messages, max_tokens,
  temperature, base URL), written atomically, so a rerun or an interrupted run resumed never pays twice.
* **Bounded retries** with exponential back-off on timeouts, connection errors, 429 and 5xx; never on other
  4xx (a wrong key or model name does not get better by asking again).
* **A token budget** (prompt + completion tokens): the next request's size is estimated *before* it is sent,
  and :class:`BudgetExceeded` is raised rather than overspend. What was done before stays cached.
* **Strict Yes/No parsing** (:func:`parse_yes_no`): case and surrounding whitespace are forgiven, nothing else;
  an unparsed answer is returned as ``None`` and counted, never silently dropped.
* **Unusable answers are not kept**: an empty (or whitespace-only) answer is counted in ``empty_answers``,
  logged, and not written to the cache, so a rerun asks again instead of replaying it forever.
* **Secrets stay secret**: the key, and a ``user:password@`` inside ``OPENAI_BASE_URL``, never appear in a log
  line, a ``repr``, an exception message or a cache file, whatever a server echoes back (a 401 may quote the
  key). A secret of :data:`MIN_SECRET_LENGTH` characters or more is replaced wherever it appears; a shorter one
  (a placeholder key such as ``x`` for a local server) only where it stands as a word of its own, since replacing
  it inside words would mangle them. Cache files store the request with the server's address stripped of its
  credentials (:func:`redact_url`), and the answer unchanged.
* **A cache that cannot be written loses nothing**: on a full disk or a read-only cache folder the answer is
  still returned and used, with one warning naming the folder and ``CTX_LLM_CACHE``.

Cached answers are model-written text: show them with ``print`` (or escaped HTML), never render them as HTML.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ctx_utils.results import write_text_atomic
from ctx_utils.settings import env_path

if TYPE_CHECKING:  # the openai package is imported by the client that sends requests (0.7 s saved for every
    import openai  # notebook that only reads saved or offline explanations)

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3  # a cautious estimate (English averages about 4): the budget errs on the side of stopping
MIN_SECRET_LENGTH = 12  # shorter keys are placeholders for a local server ("x", "ollama"), not secrets to scrub
HIDDEN = "<hidden key>"


class LLMError(RuntimeError):
    """Base class of this module's errors."""


class LLMNotConfigured(LLMError):
    """No API key: the notebooks take the offline path."""


class BudgetExceeded(LLMError):
    """The next request would take the client past its token budget. Earlier answers stay cached."""


class LLMRequestFailed(LLMError):
    """The endpoint refused the request, or kept failing after the allowed retries."""


@dataclass(frozen=True)
class Completion:
    """One answer: its text, why it stopped, the tokens it cost, and whether it came from the cache."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False


def parse_yes_no(text: str) -> bool | None:
    """``"Yes"`` → True, ``"No"`` → False (any case, surrounding whitespace ignored); anything else → None."""
    answer = text.strip().casefold()
    return {"yes": True, "no": False}.get(answer)


def default_cache_dir() -> Path:
    """``$CTX_LLM_CACHE`` (as typed: ``~`` expanded, relative to where it was typed) or ``~/.cache/ctx_lookups/llm``."""
    return env_path("CTX_LLM_CACHE") or Path.home() / ".cache" / "ctx_lookups" / "llm"


def redact_url(url: str) -> str:
    """``url`` without the credentials of a ``user:password@`` part (shown, logged and cached instead of it)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="<hidden>@" + parts.netloc.rsplit("@", 1)[1]))


def url_secrets(url: str) -> list[str]:
    """The secrets inside ``url``: its ``user:password`` part and the password, raw and percent-decoded."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rsplit("@", 1)[0]
    found = [userinfo, urllib.parse.unquote(userinfo)]
    if parts.password:
        found += [parts.password, urllib.parse.unquote(parts.password)]
    return [s for s in dict.fromkeys(found) if s]


def estimate_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    """An upper-side guess of a request's cost: prompt characters / 3, a few tokens per message, + max_tokens."""
    prompt = sum(len(m["content"]) // CHARS_PER_TOKEN + 4 for m in messages) + 3
    return prompt + max_tokens


class LLMClient:
    """Chat completions with a disk cache, retries, a token budget and a secret key.

    Arguments override the environment (see the module docstring). ``timeout`` is seconds per attempt;
    ``max_retries`` counts the extra attempts after the first; back-off doubles from ``backoff_s``. An
    unreachable server therefore costs up to ``(max_retries + 1) × timeout`` seconds plus the back-off.
    """

    def __init__(
        self,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        cache_dir: str | Path | None = None,
        token_budget: int | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        backoff_s: float = 1.0,
    ) -> None:
        from ctx_utils.settings import load_settings

        settings = load_settings()  # CTX_LLM_MODEL, CTX_LLM_TOKEN_BUDGET, CTX_LLM_TIMEOUT, CTX_LLM_RETRIES, validated
        timeout = settings.llm_timeout if timeout is None else timeout
        max_retries = settings.llm_retries if max_retries is None else max_retries
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not api_key.strip():
            raise LLMNotConfigured(
                "No LLM is configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for a local server such as "
                "Ollama or vLLM, where any non-empty key works), or use the offline explainer."
            )
        self._api_key = api_key.strip()
        self.model = model or settings.llm_model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.shown_url = redact_url(self.base_url)  # what messages, the repr and cache records hold
        self._secrets = [self._api_key, *url_secrets(self.base_url)]
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        budget = settings.llm_token_budget if token_budget is None else token_budget
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"The token budget must be a whole number of tokens, got {budget!r} (CTX_LLM_TOKEN_BUDGET).")
        self.token_budget = budget
        if not timeout > 0 or isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(
                f"timeout must be a positive number of seconds and max_retries a whole number >= 0, got "
                f"timeout={timeout!r}, max_retries={max_retries!r}."
            )
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        import openai

        # The openai package's own retries are off: this class retries, logs and scrubs in one place.
        self._client = openai.OpenAI(api_key=self._api_key, base_url=self.base_url, timeout=timeout, max_retries=0)
        self.tokens_used = 0  # prompt + completion tokens of requests actually sent (cache hits are free)
        self.requests_sent = 0
        self.cache_hits = 0
        self.empty_answers = 0  # answers with no text: counted and logged, never cached
        self.unsaved_answers = 0  # answers the cache could not store (full disk, read-only folder): used, not kept

    def __repr__(self) -> str:
        return (
            f"LLMClient(model={self.model!r}, base_url={self._scrub(self.shown_url)!r}, cache_dir='{self.cache_dir}', "
            f"tokens_used={self.tokens_used}/{self.token_budget}, key=<hidden>)"
        )

    def complete(self, prompt: str, max_tokens: int, temperature: float | None = None) -> Completion:
        """Ask one user-message prompt; answer from the cache when this exact request was asked before."""
        messages = [{"role": "user", "content": prompt}]
        request = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "base_url": self.shown_url,  # the server, without credentials: they do not change the answer
        }
        path = self._cache_path(request)
        cached = self._read_cache(path)
        if cached is not None:
            self.cache_hits += 1
            return cached
        estimate = estimate_tokens(messages, max_tokens)
        if self.tokens_used + estimate > self.token_budget:
            raise BudgetExceeded(
                f"The next request (about {estimate} tokens) would pass the token budget "
                f"({self.tokens_used} of {self.token_budget} used). Answers so far are cached: raise "
                "token_budget (or CTX_LLM_TOKEN_BUDGET) and rerun to continue where this stopped."
            )
        completion = self._send(messages, max_tokens, temperature)
        self.tokens_used += (completion.prompt_tokens + completion.completion_tokens) or estimate  # no usage: the guess
        self.requests_sent += 1
        if not completion.text.strip():
            self.empty_answers += 1
            log.warning(
                "Empty answer from %s (finish_reason %r): not cached, a rerun asks again.", self.model, completion.finish_reason
            )
            return completion
        record = {"request": request, "response": asdict(completion)}
        record["response"].pop("cached")
        self._save(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")  # holds no secret: stored as is
        return completion

    def ask_yes_no(self, prompt: str, max_tokens: int = 1) -> bool | None:
        """Ask a Yes/No question; None (logged, for the caller to count) when the answer is neither."""
        completion = self.complete(prompt, max_tokens=max_tokens)
        answer = parse_yes_no(completion.text)
        if answer is None:
            log.warning("Unparsed answer (neither Yes nor No): %r", self._scrub(completion.text))
        return answer

    # --- internals ---------------------------------------------------------------------------------------

    def _save(self, path: Path, text: str) -> None:
        """Write a cache record; a disk error costs the cache entry (warned of once per client), never the answer."""
        try:
            write_text_atomic(path, text)
        except OSError as err:
            self.unsaved_answers += 1
            if self.unsaved_answers == 1:
                log.warning(
                    "Could not save an answer in the LLM cache %s (%s): the answer is used, but a rerun will ask (and "
                    "pay) again. Free some space or set CTX_LLM_CACHE to a writable folder.",
                    self.cache_dir, err.strerror or type(err).__name__,
                )

    def _cache_path(self, request: dict) -> Path:
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return self.cache_dir / f"{digest}.json"

    @staticmethod
    def _read_cache(path: Path) -> Completion | None:
        """The answer cached at ``path``, or None when there is none or it cannot be trusted (then it is asked again).

        Untrusted: an unreadable record, an empty answer, or one holding the placeholder that earlier versions
        of this module wrote over every occurrence of a short key (the key ``x`` turned ``text`` into
        ``te<hidden key>t``; the key ``test`` changed the words of an explanation).
        """
        if not path.exists():
            return None
        try:
            completion = Completion(**json.loads(path.read_text(encoding="utf-8"))["response"], cached=True)
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("Unreadable LLM cache entry %s (%s): asking again.", path, type(err).__name__)
            return None
        if not isinstance(completion.text, str) or not completion.text.strip() or HIDDEN in completion.text:
            log.warning("Unusable LLM cache entry %s (empty, or altered by an older kit): asking again.", path)
            return None
        return completion

    def _send(self, messages: list[dict[str, str]], max_tokens: int, temperature: float | None) -> Completion:
        import openai

        extra = {} if temperature is None else {"temperature": temperature}
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, **extra
                )
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as err:
                problem = self._describe(err)  # APITimeoutError is an APIConnectionError
                if attempt == self.max_retries:
                    raise LLMRequestFailed(self._gave_up(problem, unreachable=isinstance(err, openai.APIConnectionError))) from None
                wait = self.backoff_s * 2**attempt
                log.info("%s; retrying in %.2f s (attempt %d of %d)", problem, wait, attempt + 2, self.max_retries + 1)
                time.sleep(wait)
            except openai.OpenAIError as err:  # other 4xx: a wrong key, model or request; retrying cannot help
                raise LLMRequestFailed(
                    f"{self._describe(err)}. Check OPENAI_API_KEY, CTX_LLM_MODEL ({self.model!r}) and OPENAI_BASE_URL."
                ) from None
            else:
                return self._to_completion(response)
        raise AssertionError("unreachable: the loop returns or raises")

    @staticmethod
    def _to_completion(response: object) -> Completion:
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def _gave_up(self, problem: str, unreachable: bool) -> str:
        """The message after the last attempt: what failed, how long was tried, and the ways on."""
        tried = f"still after {self.max_retries + 1} attempts"
        if not unreachable:  # the server answered 429 / 5xx: it exists, it is busy or broken
            return f"{problem}, {tried}. Wait and rerun: answers received so far are cached."
        return (
            f"{problem}: the LLM server cannot be reached, {tried} of up to {self.timeout:g} s each. Check "
            "OPENAI_BASE_URL (a local server must be running), or go on without an LLM: unset OPENAI_API_KEY and "
            "rerun (or set CTX_EXPLAINER=offline), and the offline explainer runs with no network. Answers received "
            "so far are cached; CTX_LLM_TIMEOUT (seconds) and CTX_LLM_RETRIES (extra attempts) change the waiting."
        )

    def _describe(self, err: openai.OpenAIError) -> str:
        status = getattr(err, "status_code", None)
        kind = type(err).__name__ + (f" (HTTP {status})" if status else "")
        return self._scrub(f"{kind} from {self.shown_url}: {err}")

    def _scrub(self, text: str) -> str:
        """``text`` with every secret replaced by a placeholder (for messages, never records): one of
        :data:`MIN_SECRET_LENGTH` characters or more wherever it appears, a shorter one where it is a word of its own."""
        for secret in self._secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                text = text.replace(secret, HIDDEN)
            else:
                text = re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", HIDDEN, text)
        return text
