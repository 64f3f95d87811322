"""Continuous batching for llama.cpp: one thread owns the context and decodes many sequences.

Every step builds one `llama_batch`: first one token for each sequence that is generating,
then chunks of waiting prompts with what is left of the `n_batch` budget, oldest first. A
long prompt is thus evaluated over several steps while the streams already running still
get a token every step. Sequences join and leave between steps.

Each slot is one KV sequence (seq_id = slot index) of at most `n_ctx_seq` tokens. A slot
keeps its KV after its request ends; a new request takes the idle slot that shares the
longest prefix with its prompt and evaluates only the rest (the prefix cache).

Temperature-0 determinism: llama.cpp is not batch-invariant (logits depend slightly on how
tokens are split into batches). What holds: the same request sent alone twice gives the
same tokens. A slot remembers where each of its prompt chunks started; a repeat of a
cached prompt reuses the KV only up to the start of the chunk that held the last prompt
token and evaluates that chunk again, split exactly as before. A prompt evaluated from
scratch alone goes in one chunk (up to n_batch), as llama-server and llama-cpp-python do,
so their greedy text matches ours. Requests that overlap others, or that reuse a prefix
of a different prompt, may differ from their solo runs.

A request for n choices takes n slots at once. Its first sequence evaluates the prompt; the
others wait, then copy that KV (`llama_memory_seq_cp`; in the unified pool the cells are shared,
not copied) and sample their first token from the same logits row, each with its own chain.
From there each choice runs as a sequence of its own. One final chunk reports all of them.
With a seed, choice i samples with seed + i; the same request sent alone twice gives the same
choices again (as above, and because its other choices take the slots that hold its prompt).

Log-probabilities, for the sequences that ask, are a log-softmax of the row's raw logits
(before bias, penalties and temperature, as vLLM reports them by default).
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import dataclasses
import itertools
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .base import Chunk, FinishReason, TokenLogprob, TopLogprob
from .errors import EngineCrashedError, EngineError, EngineUnavailableError
from .llama_sampling import ChainSettings, GrammarSampler, SamplerChain
from .stops import StopMatcher

if TYPE_CHECKING:
    from llama_cpp import Llama, llama_context_p, llama_vocab_p

logger = logging.getLogger(__name__)

Emit = Callable[[Chunk | BaseException], None]


@dataclasses.dataclass(eq=False)
class Sequence:
    """One request inside the scheduler; built by the engine, driven by the scheduler thread."""

    request_id: str
    prompt: list[int]
    max_tokens: int
    settings: ChainSettings
    stops: tuple[str, ...]
    emit: Emit
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    # How many alternatives to report with each token's log-probability; None: no logprobs.
    top_logprobs: int | None = None
    # The grammar its output must follow (structured outputs); it heads the sampler chain.
    grammar: GrammarSampler | None = None
    # n > 1: the choice this sequence is, and on choice 0 the other choices (which share
    # `emit` and `cancelled`); they start from choice 0's evaluated prompt.
    index: int = 0
    siblings: list[Sequence] = dataclasses.field(default_factory=list)
    leader: Sequence | None = None
    # Set by the scheduler.
    slot: Slot | None = None
    cached_tokens: int = 0
    n_past: int = 0  # tokens of this sequence in the slot's KV
    generated: list[int] = dataclasses.field(default_factory=list)
    pending_ids: list[int] = dataclasses.field(default_factory=list)
    pending_logprobs: list[TokenLogprob] = dataclasses.field(default_factory=list)
    forked: bool = False  # a sibling whose KV now holds the prompt
    finish_reason: FinishReason | None = None
    next_token: int | None = None  # sampled, not yet evaluated
    sampler: SamplerChain | None = None
    matcher: StopMatcher = dataclasses.field(init=False)
    decoder: codecs.IncrementalDecoder = dataclasses.field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def __post_init__(self) -> None:
        self.matcher = StopMatcher(self.stops)

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)

    @property
    def awaiting_prompt(self) -> bool:
        """A sibling whose prompt choice 0 is still evaluating."""
        return self.leader is not None and not self.forked

    @property
    def choices(self) -> list[Sequence]:
        """Every choice of this sequence's request, by index."""
        leader = self.leader or self
        return [leader, *leader.siblings]

    @property
    def held_slot(self) -> Slot:
        """The slot of a started sequence (the scheduler only asks for it once it has started)."""
        if self.slot is None:
            raise EngineCrashedError(f"request {self.request_id} has no slot: it was never started")
        return self.slot

    @property
    def chain(self) -> SamplerChain:
        """The sampler chain of a running sequence."""
        if self.sampler is None:
            raise EngineCrashedError(f"request {self.request_id} has no sampler: it is not running")
        return self.sampler


@dataclasses.dataclass(eq=False)
class Slot:
    """A KV sequence and the tokens it holds, kept after its request as a cached prefix."""

    seq_id: int
    tokens: list[int] = dataclasses.field(default_factory=list)
    starts: list[int] = dataclasses.field(default_factory=list)  # per token: where its batch chunk began
    busy: bool = False
    last_used: int = 0


def lower_thread_priority(nice: int) -> None:
    """Give the calling thread, and every thread it starts from now on, `nice` more niceness.

    llama.cpp's compute threads (OpenMP's or ggml's pool) are started by the thread that calls
    llama_decode, and Linux threads inherit their creator's niceness, so the whole decode runs
    below the event loop that answers HTTP. When there are as many busy compute threads as
    cores, the loop would otherwise wait its turn behind them on every request.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, current + nice))
    except OSError as exc:  # a sandbox without the permission: run at normal priority
        logger.warning("could not lower the llama.cpp threads' priority: %s", exc)


class Scheduler:
    """Owns a llama_context on its own thread and runs the batching loop."""

    def __init__(
        self,
        llama: Llama,
        ctx: llama_context_p,
        *,
        parallel: int,
        n_ctx_seq: int,
        n_batch: int,
        prefix_cache: bool = True,
        name: str = "llama",
        nice: int = 0,
    ):
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._llama = llama  # tokenizer and vocab; its own small context is unused
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(llama._model.model)
        self.parallel = parallel
        self.n_ctx_seq = n_ctx_seq
        self.n_batch = n_batch
        self.prefix_cache = prefix_cache
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._slots = [Slot(seq_id=i) for i in range(parallel)]
        self._clock = itertools.count(1)
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._cond = threading.Condition()
        self._stopping = False
        self.steps = 0  # decode calls so far, for tests and status pages
        self.prompt_tokens_evaluated = 0  # prompt tokens put through decode (cached ones are not)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._pieces: dict[int, tuple[str, tuple[int, ...]]] = {}  # token id -> text and bytes, for logprobs
        self.peak_running = 0
        self.nice = nice
        self._thread = threading.Thread(target=self._loop, name=f"llama-{name}", daemon=True)
        self._thread.start()

    # -- called from any thread --------------------------------------------------------

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence; it starts when a slot is free (FIFO)."""
        with self._cond:
            if self._stopping:
                raise EngineUnavailableError("the model is being unloaded")
            self._waiting.append(sequence)
            self._cond.notify()

    def wake(self) -> None:
        """Make the loop look at cancellations now even if it is idle."""
        with self._cond:
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        """Waiting and running counts, and the KV cells that running sequences hold out of all
        (racy snapshot; for status pages and /metrics). An idle slot's cached prefix counts as free."""
        return {
            "waiting": len(self._waiting),
            "running": len(self._running),
            "peak_running": self.peak_running,
            "parallel": self.parallel,
            "kv_cache_tokens": sum(len(slot.tokens) for slot in self._slots if slot.busy),
            "kv_cache_capacity": self.parallel * self.n_ctx_seq,
        }

    def slot_tokens(self) -> list[list[int]]:
        """A copy of what each slot's KV holds (for tests; racy while running)."""
        return [list(slot.tokens) for slot in self._slots]

    def close(self) -> None:
        """Stop the loop, fail whatever is left, free the batch and samplers."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        gone = EngineUnavailableError("the model was unloaded")
        for sequence in [*self._running, *self._waiting]:
            self._finish_with_error(sequence, gone)
        self._running.clear()
        self._waiting.clear()
        self._llama_cpp.llama_batch_free(self._batch)

    # -- the scheduler thread ----------------------------------------------------------

    def _loop(self) -> None:
        lower_thread_priority(self.nice)
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._running:
                    self._cond.wait()
                if self._stopping:
                    return
                admitted = self._admit()
            for sequence in admitted:
                try:
                    self._start(sequence)
                    for sibling in sequence.siblings:
                        self._start_sibling(sibling)
                except Exception as exc:
                    logger.exception("could not start request %s", sequence.request_id)
                    self._finish_with_error(sequence, EngineCrashedError(f"llama.cpp failed: {exc}"))
                    for sibling in sequence.siblings:
                        self._release(sibling)
            try:
                self._drop_cancelled()
                if self._running:
                    self._step()
            except Exception as exc:  # a failure must not kill the thread: fail what ran
                logger.exception("llama.cpp scheduler step failed")
                error = exc if isinstance(exc, EngineError) else EngineCrashedError(f"llama.cpp failed: {exc}")
                for sequence in list(self._running):
                    self._finish_with_error(sequence, error, clear_slot=True)

    def _admit(self) -> list[Sequence]:
        """Take waiting sequences while slots are free (called under the lock).

        A request for n choices needs n free slots; until it has them, those behind it wait
        too (FIFO), so that a big request is never passed over for ever.
        """
        admitted = []
        free = self.parallel - len(self._running)
        while self._waiting:
            sequence = self._waiting[0]
            if sequence.cancelled.is_set():
                self._waiting.popleft()
                continue
            if len(sequence.choices) > free:
                break
            self._waiting.popleft()
            admitted.append(sequence)
            free -= len(sequence.choices)
        return admitted

    def _start(self, sequence: Sequence) -> None:
        slot, keep = self._pick_slot(sequence.prompt)
        slot.busy = True
        # Drop the slot's KV past the reused prefix; positions must continue from `keep`.
        self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
        del slot.tokens[keep:]
        del slot.starts[keep:]
        sequence.slot = slot
        sequence.n_past = keep
        sequence.cached_tokens = keep
        sequence.sampler = _chain(self._vocab, sequence)
        self._running.append(sequence)
        self.peak_running = max(self.peak_running, len(self._running))

    def _start_sibling(self, sequence: Sequence) -> None:
        """Reserve a slot for choice i > 0; it gets its prompt's KV when choice 0 has it.

        Idle slots that hold this prompt go first: they are copies of what choice 0 is about to
        hold, so other prompts stay cached; and once they are cleared, choice 0's prompt lands in
        the same KV cells as the first time, so a repeat gives the same logits.
        """
        idle = [slot for slot in self._slots if not slot.busy]
        slot = max(idle, key=lambda slot: (_common_prefix(slot.tokens, sequence.prompt), -slot.last_used))
        slot.busy = True
        self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, 0, -1)
        slot.tokens.clear()
        slot.starts.clear()
        sequence.slot = slot
        sequence.sampler = _chain(self._vocab, sequence)
        self._running.append(sequence)
        self.peak_running = max(self.peak_running, len(self._running))

    def _fork(self, sibling: Sequence) -> None:
        """Give a sibling the prompt's KV from choice 0 (whose prompt was just evaluated)."""
        leader = sibling.choices[0]
        source, target = leader.held_slot, sibling.held_slot
        self._llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, target.seq_id, -1, -1)
        target.tokens[:] = source.tokens
        target.starts[:] = source.starts
        sibling.n_past = leader.n_past
        sibling.forked = True

    def _pick_slot(self, prompt: list[int]) -> tuple[Slot, int]:
        """The idle slot sharing the longest prefix with `prompt` (ties: most recent), else the
        least recent; with how many of its tokens to keep."""
        idle = [slot for slot in self._slots if not slot.busy]
        best: Slot | None = None
        best_common = 0
        if self.prefix_cache:
            for slot in idle:
                common = _common_prefix(slot.tokens, prompt)
                if common > best_common or (
                    best is not None and common == best_common and common > 0 and slot.last_used > best.last_used
                ):
                    best, best_common = slot, common
        if best is None:
            return min(idle, key=lambda slot: slot.last_used), 0
        if best_common == len(prompt):
            # The whole prompt is cached: its last token must be evaluated again for its
            # logits. Redo that token's whole chunk, so the split matches the first time.
            return best, best.starts[len(prompt) - 1]
        return best, best_common

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self._running if s.cancelled.is_set()]:
            self._finish(sequence, "cancelled", emit=False)

    def _step(self) -> None:
        llama_cpp, batch = self._llama_cpp, self._batch
        batch.n_tokens = 0
        outputs: list[tuple[Sequence, int]] = []  # sequences that sample from this step, with their row

        def add(sequence: Sequence, tokens: list[int], want_logits: bool) -> None:
            slot, start = sequence.held_slot, sequence.n_past
            seq_id = slot.seq_id
            slot.starts.extend([start] * len(tokens))
            for offset, token in enumerate(tokens):
                row = batch.n_tokens
                batch.token[row] = token
                batch.pos[row] = start + offset
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = seq_id
                batch.logits[row] = 0
                batch.n_tokens = row + 1
            if want_logits:
                batch.logits[batch.n_tokens - 1] = 1
                outputs.append((sequence, batch.n_tokens - 1))
            sequence.n_past += len(tokens)
            slot.tokens.extend(tokens)

        budget = self.n_batch
        # Running streams first: one token each, so a long prompt never stalls them.
        for sequence in self._running:
            if not sequence.prefilling and budget > 0 and sequence.next_token is not None:
                token, sequence.next_token = sequence.next_token, None
                add(sequence, [token], True)
                budget -= 1
        # Then prompts, oldest first, in chunks of what the budget has left.
        for sequence in self._running:
            if budget <= 0:
                break
            if not sequence.prefilling or sequence.awaiting_prompt:
                continue
            take = min(len(sequence.prompt) - sequence.n_past, budget)
            add(
                sequence,
                sequence.prompt[sequence.n_past : sequence.n_past + take],
                sequence.n_past + take == len(sequence.prompt),
            )
            self.prompt_tokens_evaluated += take
            budget -= take
        if batch.n_tokens == 0:
            return
        result = llama_cpp.llama_decode(self._ctx, batch)
        self.steps += 1
        if result != 0:
            raise EngineCrashedError(f"llama_decode failed with code {result}")
        for sequence, row in outputs:
            row_logprobs = _LazyLogprobs(self._ctx, row, self._n_vocab)
            # Choice 0's prompt is in: the other choices start from its KV and sample from its row.
            forks = [sibling for sibling in sequence.siblings if sibling.awaiting_prompt and sibling in self._running]
            for sibling in forks:
                self._fork(sibling)
            for choice in [sequence, *forks]:
                self._accept(choice, choice.chain.sample(self._ctx, row), row_logprobs)

    def _accept(self, sequence: Sequence, token: int, row_logprobs: _LazyLogprobs) -> None:
        """One sampled token: stream its text, or end the sequence."""
        if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(sequence, "stop")
            return
        piece = self._llama.detokenize([token], prev_tokens=sequence.prompt + sequence.generated)
        sequence.generated.append(token)
        sequence.pending_ids.append(token)
        if sequence.top_logprobs is not None:
            sequence.pending_logprobs.append(self._token_logprob(row_logprobs.values(), token, sequence.top_logprobs))
        safe = sequence.matcher.feed(sequence.decoder.decode(piece))
        if safe:
            sequence.emit(
                Chunk(
                    text=safe,
                    token_ids=tuple(sequence.pending_ids),
                    index=sequence.index,
                    logprobs=tuple(sequence.pending_logprobs),
                )
            )
            sequence.pending_ids = []
            sequence.pending_logprobs = []
        if sequence.matcher.stopped:
            self._finish(sequence, "stop")
        elif len(sequence.generated) >= sequence.max_tokens:
            self._finish(sequence, "length")
        else:
            sequence.next_token = token

    def _token_logprob(self, logprobs: np.ndarray, token: int, top: int) -> TokenLogprob:
        alternatives: tuple[TopLogprob, ...] = ()
        if top > 0:
            best = np.argpartition(-logprobs, top - 1)[:top]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            alternatives = tuple(
                TopLogprob(token=text, logprob=float(logprobs[t]), bytes=data)
                for t in best
                for text, data in [self._piece(int(t))]
            )
        text, data = self._piece(token)
        return TokenLogprob(token=text, logprob=float(logprobs[token]), bytes=data, top=alternatives)

    def _piece(self, token: int) -> tuple[str, tuple[int, ...]]:
        """A token's own text and UTF-8 bytes (special tokens spelled out), cached per id."""
        known = self._pieces.get(token)
        if known is None:
            size = 32
            while True:
                buffer = (ctypes.c_char * size)()
                n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, True)
                if n >= 0:
                    break
                size = -n  # the piece needs this many bytes
            data = buffer.raw[:n]
            known = self._pieces[token] = (data.decode("utf-8", errors="replace"), tuple(data))
        return known

    def _finish(self, sequence: Sequence, reason: FinishReason, *, emit: bool = True) -> None:
        """End a sequence, slot back to idle with its KV as cache. The last choice of a request
        to end sends the final chunk, with the counts of all of them."""
        if emit:
            matcher = sequence.matcher
            tail = matcher.feed(sequence.decoder.decode(b"", final=True)) + matcher.flush()
            sequence.finish_reason = reason
            ids, logprobs = (tuple(sequence.pending_ids), tuple(sequence.pending_logprobs)) if tail else ((), ())
            choices = sequence.choices
            reasons = tuple(choice.finish_reason for choice in choices if choice.finish_reason is not None)
            if len(reasons) == len(choices):
                sequence.emit(
                    Chunk(
                        text=tail,
                        token_ids=ids,
                        logprobs=logprobs,
                        index=sequence.index,
                        finish_reason=reasons[0],
                        prompt_tokens=len(sequence.prompt),
                        completion_tokens=sum(len(choice.generated) for choice in choices),
                        cached_tokens=choices[0].cached_tokens,
                        finish_reasons=reasons if len(choices) > 1 else (),
                        stop_sequence=choices[0].matcher.matched,
                    )
                )
            elif tail:
                sequence.emit(Chunk(text=tail, token_ids=ids, logprobs=logprobs, index=sequence.index))
        self._release(sequence)

    def _finish_with_error(self, sequence: Sequence, error: BaseException, *, clear_slot: bool = False) -> None:
        sequence.emit(error)
        if sequence.slot is not None and clear_slot:
            # After a failed decode the KV may hold half a batch: trust none of it.
            self._llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot.seq_id, 0, -1)
            sequence.slot.tokens.clear()
        self._release(sequence)

    def _release(self, sequence: Sequence) -> None:
        if sequence.grammar is not None:
            sequence.grammar.free()  # a no-op once its chain took it
        if sequence.sampler is not None:
            sequence.sampler.free()
            sequence.sampler = None
        if sequence.slot is not None:
            sequence.slot.busy = False
            sequence.slot.last_used = next(self._clock)
        if sequence in self._running:
            self._running.remove(sequence)


class _LazyLogprobs:
    """One output row's log-softmax, computed only if a sequence sampling from it asks."""

    def __init__(self, ctx: llama_context_p, row: int, n_vocab: int):
        self._ctx, self._row, self._n_vocab = ctx, row, n_vocab
        self._values: np.ndarray | None = None

    def values(self) -> np.ndarray:
        if self._values is None:
            import llama_cpp

            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self._ctx, self._row), shape=(self._n_vocab,)
            ).astype(np.float64)
            shifted = logits - logits.max()
            self._values = shifted - np.log(np.exp(shifted).sum())
        return self._values


def _chain(vocab: llama_vocab_p, sequence: Sequence) -> SamplerChain:
    """A sequence's sampler chain, with its grammar sampler when it has one."""
    grammar = sequence.grammar.take() if sequence.grammar is not None else None
    return SamplerChain(vocab, sequence.settings, grammar=grammar)


def _common_prefix(cached: list[int], prompt: list[int]) -> int:
    n = min(len(cached), len(prompt))
    for i in range(n):
        if cached[i] != prompt[i]:
            return i
    return n
