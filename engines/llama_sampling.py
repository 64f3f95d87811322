"""Per-sequence llama.cpp sampler chains, built in C so sampling costs no Python per logit."""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING

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
    min-p, temperature, then the random draw (or greedy at temperature 0). `first` samplers
    go at the head of the chain: a grammar sampler (`llama_sampler_init_grammar`) belongs
    there, so that it masks tokens before anything else looks at them.
    """

    def __init__(self, vocab: llama_vocab_p, settings: ChainSettings, *, first: tuple[llama_sampler_p, ...] = ()):
        import llama_cpp

        self._llama_cpp = llama_cpp
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.chain: llama_sampler_p | None = chain

        def add(sampler: llama_sampler_p) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        for sampler in first:
            add(sampler)  # the chain owns (and frees) every sampler added to it
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
        token: int = self._llama_cpp.llama_sampler_sample(self.chain, ctx, index)
        return token

    def free(self) -> None:
        """Release the chain and every sampler in it."""
        if self.chain is not None:
            self._llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
