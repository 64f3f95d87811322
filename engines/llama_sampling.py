"""Per-sequence llama.cpp sampler chains, built in C so sampling costs no Python per logit."""

from __future__ import annotations

import ctypes
import dataclasses
import random
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInputError

if TYPE_CHECKING:
    from llama_cpp import llama_context_p, llama_sampler_p, llama_vocab_p

# Penalties look back over this many tokens, as llama.cpp's own default does.
PENALTY_LAST_N = 64


@dataclasses.dataclass(frozen=True)
class ChainSettings:
    """Everything one sequence's sampler chain is made from."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()


class SamplerChain:
    """One sequence's `llama_sampler` chain; free it when the sequence ends.

    The order follows llama.cpp's common sampler: logit bias, penalties, top-k, top-p,
    min-p, temperature, then the random draw (or greedy at temperature 0).

    A `grammar` sampler (`llama_sampler_init_grammar`, owned from then on) conceptually heads
    the chain: it masks every token the grammar forbids before anything else looks at them.
    Masking all 49k tokens of SmolLM2's vocabulary costs 20 to 60 ms a token on this 2-core
    machine, several times the decode step itself, so it is applied as llama.cpp's common
    sampler does: the chain samples from the unmasked row, the grammar checks that one token,
    and only when it is rejected is the row masked in full and sampled again.
    """

    def __init__(self, vocab: llama_vocab_p, settings: ChainSettings, *, grammar: llama_sampler_p | None = None):
        import llama_cpp

        self._llama_cpp = llama_cpp
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.chain: llama_sampler_p | None = chain
        self.grammar = grammar
        self._candidates = _Candidates(n_vocab) if grammar is not None else None
        self.grammar_resamples = 0  # tokens the grammar rejected, for tests and measurements

        def add(sampler: llama_sampler_p) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)  # the chain owns (and frees) it

        if settings.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(settings.logit_bias))(
                *(llama_cpp.llama_logit_bias(token=token, bias=bias) for token, bias in settings.logit_bias)
            )
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(settings.logit_bias), biases))
        if settings.presence_penalty or settings.frequency_penalty or settings.repeat_penalty != 1.0:
            add(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    PENALTY_LAST_N,
                    settings.repeat_penalty,
                    settings.frequency_penalty,
                    settings.presence_penalty,
                )
            )
        if settings.temperature <= 0:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        if settings.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(settings.top_k))
        if settings.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(settings.top_p, 1))
        if settings.min_p > 0:
            add(llama_cpp.llama_sampler_init_min_p(settings.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(settings.temperature))
        seed = settings.seed if settings.seed is not None else random.randint(0, 2**31 - 1)
        add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: llama_context_p, index: int) -> int:
        """Sample (and accept) a token from the `index`-th output row of the last decode."""
        llama_cpp = self._llama_cpp
        if self.grammar is None or self._candidates is None:
            token: int = llama_cpp.llama_sampler_sample(self.chain, ctx, index)
            return token
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        candidates = self._candidates
        token = candidates.sample(self.chain, logits)
        if not candidates.allows(self.grammar, token):
            self.grammar_resamples += 1
            token = candidates.sample(self.chain, logits, grammar=self.grammar)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def free(self) -> None:
        """Release the chain and every sampler in it."""
        if self.chain is not None:
            self._llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar is not None:
            self._llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None


# llama_token_data: {int32 id; float logit; float p}, packed as llama.h lays it out.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class _Candidates:
    """A reusable llama_token_data_array over the vocabulary, filled from a row of logits."""

    def __init__(self, n_vocab: int):
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._n_vocab = n_vocab
        self._data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._pointer = self._data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self._one_pointer = self._one.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))

    def sample(self, chain: llama_sampler_p | None, logits: Any, *, grammar: llama_sampler_p | None = None) -> int:
        """The token `chain` selects from the row `logits` (masked by `grammar` first, if given); accepts nothing."""
        llama_cpp, data = self._llama_cpp, self._data
        data["id"] = np.arange(self._n_vocab, dtype=np.int32)
        data["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        data["p"] = 0.0
        array = llama_cpp.llama_token_data_array(data=self._pointer, size=self._n_vocab, selected=-1, sorted=False)
        if grammar is not None:
            llama_cpp.llama_sampler_apply(grammar, ctypes.byref(array))
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def allows(self, grammar: llama_sampler_p, token: int) -> bool:
        """Whether `grammar`, in its current state, allows `token` next."""
        llama_cpp, one = self._llama_cpp, self._one
        one["id"], one["logit"], one["p"] = token, 1.0, 0.0
        array = llama_cpp.llama_token_data_array(data=self._one_pointer, size=1, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(array))
        return bool(np.isfinite(one["logit"][0]))


class GrammarSampler:
    """A compiled `llama_sampler_init_grammar` sampler, owned here until a SamplerChain takes it
    (`take`); one that is never taken (its request was cancelled while waiting) is freed here."""

    def __init__(self, sampler: llama_sampler_p):
        self._sampler: llama_sampler_p | None = sampler

    def take(self) -> llama_sampler_p | None:
        """The sampler, for a SamplerChain's `grammar`; ownership goes with it. None once taken."""
        sampler, self._sampler = self._sampler, None
        return sampler

    def free(self) -> None:
        """Free the sampler unless a chain took it."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            import llama_cpp

            llama_cpp.llama_sampler_free(sampler)

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


def grammar_samplers(vocab: llama_vocab_p, grammar: str, count: int, *, param: str) -> list[GrammarSampler]:
    """`count` grammar samplers for the GBNF `grammar`: parsed once, then cloned (one per choice).

    llama.cpp returns NULL for a grammar it cannot parse (syntax, an undefined rule, no `root`,
    left recursion); that is the client's error, named by `param`.
    """
    import llama_cpp

    try:
        text = grammar.encode("utf-8")
    except UnicodeEncodeError:
        text = b""
    first = llama_cpp.llama_sampler_init_grammar(vocab, text, b"root") if text else None
    if not first:
        raise InvalidInputError(
            f"Invalid '{param}': llama.cpp cannot parse the grammar (GBNF with a `root` rule; "
            "see llama.cpp's grammars/README.md).",
            param=param,
        )
    samplers = [GrammarSampler(first)]
    samplers += [GrammarSampler(llama_cpp.llama_sampler_clone(first)) for _ in range(count - 1)]
    return samplers
