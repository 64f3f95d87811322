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
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable

from .base import Chunk, FinishReason
from .errors import EngineCrashedError, EngineError, EngineUnavailableError
from .llama_sampling import ChainSettings, SamplerChain
from .stops import StopMatcher

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
    # Set by the scheduler.
    slot: Slot | None = None
    cached_tokens: int = 0
    n_past: int = 0  # tokens of this sequence in the slot's KV
    generated: list[int] = dataclasses.field(default_factory=list)
    pending_ids: list[int] = dataclasses.field(default_factory=list)
    next_token: int | None = None  # sampled, not yet evaluated
    sampler: SamplerChain | None = None
    matcher: StopMatcher | None = None
    decoder: codecs.IncrementalDecoder | None = None

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)


@dataclasses.dataclass(eq=False)
class Slot:
    """A KV sequence and the tokens it holds, kept after its request as a cached prefix."""

    seq_id: int
    tokens: list[int] = dataclasses.field(default_factory=list)
    starts: list[int] = dataclasses.field(default_factory=list)  # per token: where its batch chunk began
    busy: bool = False
    last_used: int = 0


class Scheduler:
    """Owns a llama_context on its own thread and runs the batching loop."""

    def __init__(self, llama, ctx, *, parallel: int, n_ctx_seq: int, n_batch: int, prefix_cache: bool = True,
                 name: str = "llama"):
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
        self.peak_running = 0
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
        return {"waiting": len(self._waiting), "running": len(self._running), "peak_running": self.peak_running,
                "parallel": self.parallel,
                "kv_cache_tokens": sum(len(slot.tokens) for slot in self._slots if slot.busy),
                "kv_cache_capacity": self.parallel * self.n_ctx_seq}

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
                except Exception as exc:
                    logger.exception("could not start request %s", sequence.request_id)
                    self._finish_with_error(sequence, EngineCrashedError(f"llama.cpp failed: {exc}"))
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
        """Take waiting sequences while slots are free (called under the lock)."""
        admitted = []
        free = self.parallel - len(self._running)
        while self._waiting and free > 0:
            sequence = self._waiting.popleft()
            if sequence.cancelled.is_set():
                continue
            admitted.append(sequence)
            free -= 1
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
        sequence.sampler = SamplerChain(self._vocab, sequence.settings)
        sequence.matcher = StopMatcher(sequence.stops)
        sequence.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._running.append(sequence)
        self.peak_running = max(self.peak_running, len(self._running))

    def _pick_slot(self, prompt: list[int]) -> tuple[Slot, int]:
        """The idle slot sharing the longest prefix with `prompt` (ties: most recent), else the
        least recent; with how many of its tokens to keep."""
        idle = [slot for slot in self._slots if not slot.busy]
        best, best_common = None, 0
        if self.prefix_cache:
            for slot in idle:
                common = _common_prefix(slot.tokens, prompt)
                if common > best_common or (common == best_common and common > 0
                                            and slot.last_used > best.last_used):
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
            seq_id, start = sequence.slot.seq_id, sequence.n_past
            sequence.slot.starts.extend([start] * len(tokens))
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
            sequence.slot.tokens.extend(tokens)

        budget = self.n_batch
        # Running streams first: one token each, so a long prompt never stalls them.
        for sequence in self._running:
            if not sequence.prefilling and budget > 0:
                token, sequence.next_token = sequence.next_token, None
                add(sequence, [token], True)
                budget -= 1
        # Then prompts, oldest first, in chunks of what the budget has left.
        for sequence in self._running:
            if budget <= 0:
                break
            if not sequence.prefilling:
                continue
            take = min(len(sequence.prompt) - sequence.n_past, budget)
            add(sequence, sequence.prompt[sequence.n_past:sequence.n_past + take],
                sequence.n_past + take == len(sequence.prompt))
            budget -= take
        if batch.n_tokens == 0:
            return
        result = llama_cpp.llama_decode(self._ctx, batch)
        self.steps += 1
        if result != 0:
            raise EngineCrashedError(f"llama_decode failed with code {result}")
        for sequence, row in outputs:
            self._accept(sequence, sequence.sampler.sample(self._ctx, row))

    def _accept(self, sequence: Sequence, token: int) -> None:
        """One sampled token: stream its text, or end the sequence."""
        if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(sequence, "stop")
            return
        piece = self._llama.detokenize([token], prev_tokens=sequence.prompt + sequence.generated)
        sequence.generated.append(token)
        sequence.pending_ids.append(token)
        safe = sequence.matcher.feed(sequence.decoder.decode(piece))
        if safe:
            sequence.emit(Chunk(text=safe, token_ids=tuple(sequence.pending_ids)))
            sequence.pending_ids = []
        if sequence.matcher.stopped:
            self._finish(sequence, "stop")
        elif len(sequence.generated) >= sequence.max_tokens:
            self._finish(sequence, "length")
        else:
            sequence.next_token = token

    def _finish(self, sequence: Sequence, reason: FinishReason, *, emit: bool = True) -> None:
        """End a sequence: final chunk with the counts, slot back to idle with its KV as cache."""
        if emit:
            matcher = sequence.matcher
            tail = matcher.feed(sequence.decoder.decode(b"", final=True)) + matcher.flush()
            sequence.emit(Chunk(text=tail, token_ids=tuple(sequence.pending_ids) if tail else (),
                                finish_reason=reason, prompt_tokens=len(sequence.prompt),
                                completion_tokens=len(sequence.generated), cached_tokens=sequence.cached_tokens))
        self._release(sequence)

    def _finish_with_error(self, sequence: Sequence, error: BaseException, *, clear_slot: bool = False) -> None:
        sequence.emit(error)
        if sequence.slot is not None and clear_slot:
            # After a failed decode the KV may hold half a batch: trust none of it.
            self._llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot.seq_id, 0, -1)
            sequence.slot.tokens.clear()
        self._release(sequence)

    def _release(self, sequence: Sequence) -> None:
        if sequence.sampler is not None:
            sequence.sampler.free()
            sequence.sampler = None
        if sequence.slot is not None:
            sequence.slot.busy = False
            sequence.slot.last_used = next(self._clock)
        if sequence in self._running:
            self._running.remove(sequence)


def _common_prefix(cached: list[int], prompt: list[int]) -> int:
    n = min(len(cached), len(prompt))
    for i in range(n):
        if cached[i] != prompt[i]:
            return i
    return n
