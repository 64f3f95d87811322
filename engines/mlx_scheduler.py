"""Continuous batching for MLX: one thread owns the model and an mlx-lm BatchGenerator.

MLX must not be driven from several threads at once, so everything that touches the model
(loading, prompt evaluation, decoding) runs on the scheduler's thread. Each loop turn drops
cancelled sequences, runs queued calls, admits waiting sequences while the batch has room
(`parallel`), then takes one BatchGenerator step: one token for every generating sequence
and one chunk of the prompts still being evaluated. Sequences join and leave between steps.

Per sequence: prompt, max_tokens, temperature, top_p, seed (its own PRNG key, so a seeded
request draws the same numbers whoever shares its batch), presence/frequency penalties,
logit bias and stop strings. Shared by the batch: the model, the end-of-generation ids and
the prefill chunk size. MLX is not batch-invariant: a sequence's logits move by float
rounding with the batch around it (padding, batch shape), so greedy text is reproducible
for the same request sent alone, not necessarily across different company.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import Chunk, FinishReason, SamplingParams
from .errors import EngineCrashedError, EngineError, EngineUnavailableError
from .stops import StopMatcher

if TYPE_CHECKING:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.generate import BatchGenerator
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

Emit = Callable[[Chunk | BaseException], None]

# llama.cpp's default penalty window (penalty_last_n), so penalties mean the same on both engines.
PENALTY_WINDOW = 64


@dataclasses.dataclass(eq=False)
class Sequence:
    """One request inside the scheduler; built by the engine, driven by the scheduler thread."""

    request_id: str
    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    text: TextStream
    emit: Emit
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    # Set by the scheduler.
    uid: int | None = None
    generated: int = 0
    pending_ids: list[int] = dataclasses.field(default_factory=list)
    matcher: StopMatcher = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.matcher = StopMatcher(self.sampling.stop)


class Scheduler:
    """Owns the MLX thread: runs calls on it, and batches sequences once `serve` has a model."""

    def __init__(self, *, parallel: int, prefill_step_size: int, name: str = "mlx"):
        self.parallel = parallel
        self.prefill_step_size = prefill_step_size
        self._generator: BatchGenerator | None = None  # made on the thread by `serve`
        self._make_generator: Callable[[], BatchGenerator] | None = None
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._active: dict[int, Sequence] = {}  # BatchGenerator uid -> sequence
        self._calls: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._release: Callable[[], None] | None = None
        # Counters for tests and status pages.
        self.steps = 0  # BatchGenerator steps that decoded at least one token
        self.shared_steps = 0  # ... of which decoded tokens for more than one sequence
        self.peak_batch = 0  # most sequences decoded in one step
        self.tokens_decoded = 0
        self.started = 0  # sequences that joined the batch
        self.cancelled = 0  # ... and left it because their consumer went away
        self._thread = threading.Thread(target=self._loop, name=f"mlx-{name}", daemon=True)
        self._thread.start()

    # -- called from any thread --------------------------------------------------------

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run `fn` on the MLX thread between two steps; its result or error lands in the future."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise EngineUnavailableError("the model is being unloaded")
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    def run(self, fn: Callable[[], Any]) -> Any:
        """`call` and wait for the result."""
        return self.call(fn).result()

    def serve(self, model: nn.Module, *, stop_tokens: frozenset[int]) -> None:
        """Start batching for `model`, which ends a sequence on any of `stop_tokens`."""

        def make_generator() -> BatchGenerator:
            import mlx.core as mx
            from mlx_lm.generate import BatchGenerator

            return BatchGenerator(
                model,
                stop_tokens=[[t] for t in sorted(stop_tokens)],
                completion_batch_size=self.parallel,
                prefill_batch_size=self.parallel,
                prefill_step_size=self.prefill_step_size,
                # This thread's own default stream, as mlx_lm.server does: the steps and
                # every other call here then run in order on one stream.
                stream=mx.default_stream(mx.default_device()),
            )

        def start() -> None:
            self._make_generator = make_generator
            self._generator = make_generator()

        self.run(start)

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence; it joins the batch when there is room (FIFO)."""
        with self._cond:
            if self._stopping or self._generator is None:
                raise EngineUnavailableError("the model is not being served")
            self._waiting.append(sequence)
            self._cond.notify()

    def wake(self) -> None:
        """Make the loop look at cancellations now even if it is idle."""
        with self._cond:
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        """Waiting and running counts and step counters (racy snapshot; for status pages)."""
        return {
            "waiting": len(self._waiting),
            "running": len(self._active),
            "parallel": self.parallel,
            "peak_batch": self.peak_batch,
            "steps": self.steps,
            "shared_steps": self.shared_steps,
        }

    def close(self, release: Callable[[], None] | None = None) -> None:
        """Stop the loop, run `release` on the thread once the batch is gone, fail whatever is left."""
        with self._cond:
            self._release = release
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        gone = EngineUnavailableError("the model was unloaded")
        for sequence in [*self._active.values(), *self._waiting]:
            sequence.emit(gone)
        self._active.clear()
        self._waiting.clear()

    # -- the scheduler thread ----------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._calls or self._waiting or self._active):
                    self._cond.wait()
                calls, self._calls = self._calls, []
                stopping = self._stopping
            # Cancellations first, so a call that follows a cancel sees the sequence gone.
            self._drop_cancelled()
            for fn, future in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:
                        future.set_exception(exc)
            if stopping:
                self._shut_down()
                return
            with self._cond:
                admitted = self._admit()
            for sequence in admitted:
                try:
                    self._start(sequence)
                except Exception as exc:
                    logger.exception("could not start request %s", sequence.request_id)
                    sequence.emit(EngineCrashedError(f"MLX failed: {exc}"))
            if self._active:
                try:
                    self._step()
                except Exception as exc:  # a failure must not kill the thread: fail what ran
                    logger.exception("MLX batch step failed")
                    error = exc if isinstance(exc, EngineError) else EngineCrashedError(f"MLX failed: {exc}")
                    for sequence in list(self._active.values()):
                        sequence.emit(error)
                    self._active.clear()
                    self._reset_generator()

    def _admit(self) -> list[Sequence]:
        """Take waiting sequences while the batch has room (called under the lock)."""
        admitted: list[Sequence] = []
        while self._waiting and len(self._active) + len(admitted) < self.parallel:
            sequence = self._waiting.popleft()
            if not sequence.cancelled.is_set():
                admitted.append(sequence)
        return admitted

    @property
    def _batch(self) -> BatchGenerator:
        """The BatchGenerator, which exists from `serve` until the thread shuts down."""
        if self._generator is None:
            raise EngineUnavailableError("the model is not being served")
        return self._generator

    def _start(self, sequence: Sequence) -> None:
        # A None sampler is greedy: BatchGenerator falls back to argmax for it, though its
        # annotation (list[Sampler]) does not say so.
        (uid,) = self._batch.insert(
            [sequence.prompt],
            max_tokens=[sequence.max_tokens],
            samplers=[make_sampler(sequence.sampling)],  # type: ignore[list-item]
            logits_processors=[make_processors(sequence.sampling)],
        )
        sequence.uid = uid
        self._active[uid] = sequence
        self.started += 1

    def _drop_cancelled(self) -> None:
        with self._cond:
            if any(sequence.cancelled.is_set() for sequence in self._waiting):
                self._waiting = collections.deque(s for s in self._waiting if not s.cancelled.is_set())
        gone = [uid for uid, sequence in self._active.items() if sequence.cancelled.is_set()]
        if gone:
            self._batch.remove(gone)
            for uid in gone:
                del self._active[uid]
            self.cancelled += len(gone)

    def _step(self) -> None:
        _, responses = self._batch.next()
        if not responses:  # a step that only evaluated prompt chunks
            return
        self.steps += 1
        self.tokens_decoded += len(responses)
        self.shared_steps += len(responses) > 1
        self.peak_batch = max(self.peak_batch, len(responses))
        finished_here = []
        for response in responses:
            sequence = self._active.get(response.uid)
            if sequence is not None and self._accept(sequence, response.token, response.finish_reason):
                finished_here.append(response.uid)
        if finished_here:
            # Ended by a stop string: BatchGenerator would go on decoding them.
            self._batch.remove(finished_here)

    def _accept(self, sequence: Sequence, token: int, finish_reason: str | None) -> bool:
        """One decoded token; returns True when a stop string ended a sequence the generator keeps."""
        if finish_reason == "stop":  # the token is an end-of-generation id: not part of the text
            self._finish(sequence, "stop")
            return False
        sequence.generated += 1
        sequence.pending_ids.append(token)
        safe = sequence.matcher.feed(sequence.text.add(token))
        if safe:
            sequence.emit(Chunk(text=safe, token_ids=tuple(sequence.pending_ids)))
            sequence.pending_ids = []
        if sequence.matcher.stopped:
            self._finish(sequence, "stop")
            return finish_reason is None
        if finish_reason == "length":
            self._finish(sequence, "length")
        return False

    def _finish(self, sequence: Sequence, reason: FinishReason) -> None:
        """End a sequence: the last text and the final chunk with the counts."""
        if sequence.uid is not None:
            self._active.pop(sequence.uid, None)  # first: whoever reads the final chunk sees it gone
        matcher = sequence.matcher
        tail = matcher.feed(sequence.text.flush()) + matcher.flush()
        sequence.emit(
            Chunk(
                text=tail,
                token_ids=tuple(sequence.pending_ids) if tail else (),
                finish_reason=reason,
                prompt_tokens=len(sequence.prompt),
                completion_tokens=sequence.generated,
                stop_sequence=matcher.matched,
            )
        )

    def _reset_generator(self) -> None:
        """After a failed step the batch's caches may be half-written: start from an empty one."""
        self._batch.close()
        self._generator = self._make_generator() if self._make_generator is not None else None

    def _shut_down(self) -> None:
        if self._generator is not None:
            self._generator.close()  # gives back the wired memory limit on Metal
        self._generator = self._make_generator = None  # and with them the model
        if self._release is not None:
            try:
                self._release()
            except Exception:
                logger.exception("releasing MLX memory failed")


def make_sampler(sampling: SamplingParams) -> SeededSampler | None:
    """The sequence's sampler; None means greedy, which the batch decodes in one argmax."""
    if sampling.temperature <= 0:
        return None
    return SeededSampler(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=sampling.seed if sampling.seed is not None else random.randint(0, 2**63 - 1),
    )


def make_processors(sampling: SamplingParams) -> list[Callable[[mx.array, mx.array], mx.array]]:
    """Penalties and logit bias for one sequence, as mlx-lm logits processors."""
    from mlx_lm.sample_utils import make_logits_processors

    return make_logits_processors(
        logit_bias=dict(sampling.logit_bias) or None,
        presence_penalty=sampling.presence_penalty,
        presence_context_size=PENALTY_WINDOW,
        frequency_penalty=sampling.frequency_penalty,
        frequency_context_size=PENALTY_WINDOW,
    )


class SeededSampler:
    """Temperature and top-p sampling from a key of the sequence's own.

    mlx-lm's samplers draw from MLX's global PRNG, which every sequence in a batch shares,
    so a seed would depend on who else is decoding (mlx_lm.server serves seeded requests
    one at a time for that reason). A key per sequence, split once per token, keeps it.
    """

    def __init__(self, *, temperature: float, top_p: float, seed: int):
        import mlx.core as mx

        self._mx = mx
        self._key = mx.random.key(seed % 2**64)  # MLX seeds are unsigned 64-bit; clients send any integer
        self._temperature = temperature
        self._top_p = top_p

    def __call__(self, logprobs: mx.array) -> mx.array:
        from mlx_lm.sample_utils import apply_top_p

        core = self._mx
        self._key, key = core.random.split(self._key)
        if 0 < self._top_p < 1:
            logprobs = apply_top_p(logprobs, self._top_p)
        token: mx.array = core.random.categorical(logprobs * (1 / self._temperature), key=key)
        return token


class TextStream:
    """Turns generated ids into text deltas by decoding a short window, not single tokens.

    A lone token may hold half a UTF-8 character, and decoders such as SentencePiece's
    drop the leading space of whatever comes first; decoding a few tokens of context and
    emitting only what grew past it gets both right (the offsets scheme vLLM and TGI use).
    """

    CONTEXT = 5  # prompt tokens kept as context for the first generated token

    def __init__(self, encoder: Tokenizer, prompt_ids: list[int]):
        self._encoder = encoder
        self._ids = list(prompt_ids[-self.CONTEXT :])
        self._prefix = 0  # start of the window
        self._read = len(self._ids)  # everything before this has been emitted

    def add(self, token: int) -> str:
        """Text that `token` completes; empty while a character is still partial."""
        self._ids.append(token)
        seen = self._decode(self._ids[self._prefix : self._read])
        full = self._decode(self._ids[self._prefix :])
        if len(full) <= len(seen) or full.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return full[len(seen) :]

    def flush(self) -> str:
        """Whatever is still held back, partial characters as U+FFFD."""
        if self._read == len(self._ids):
            return ""
        seen = self._decode(self._ids[self._prefix : self._read])
        self._read = len(self._ids)
        return self._decode(self._ids[self._prefix :])[len(seen) :]

    def _decode(self, ids: list[int]) -> str:
        # Control tokens print as nothing, as llama.cpp's detokenizer renders them.
        text: str = self._encoder.decode(ids, skip_special_tokens=True)
        return text
