"""The MLX engine, on mlx-lm: Metal on Apple Silicon, mlx[cpu] elsewhere.

It serves an MLX / Hugging Face model directory (mlx_lm.load) or a llama GGUF file
(engines.mlx_gguf), so the bundled SmolLM2 file runs here as it does under llama.cpp.
MLX must not be driven from several threads at once, so one scheduler thread
(engines.mlx_scheduler) loads the weights and decodes every running sequence in one
mlx-lm BatchGenerator step; the event loop only awaits an asyncio.Queue it fills.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import TYPE_CHECKING, Any

from .base import GenerationRequest, ModelSpec
from .capabilities import CAPABILITIES
from .errors import EngineUnavailableError, InvalidInputError
from .inputs import input_param, render_template, require_tokens, utf8
from .mlx_scheduler import Scheduler, Sequence, TextStream
from .threaded import ThreadedEngine, ThreadRelay

if TYPE_CHECKING:
    import mlx.nn as nn
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

# mlx_lm.server's --decode-concurrency default: on an Apple GPU a decode step is bound by
# reading the weights, so a few dozen sequences ride along almost for free.
METAL_DEFAULT_PARALLEL = 32
# mlx[cpu] is compute-bound from the first sequence: on 2 cores a step of 4 costs about 2.5
# steps of 1 (1.3 -> 1.8 tok/s in all for SmolLM2) and 8 gain nothing over 4, while each
# stream slows in proportion. Past 4, requests are better off waiting for a place.
CPU_DEFAULT_PARALLEL = 4
# mlx-lm's default: prompt tokens evaluated per step, per admitted prompt.
DEFAULT_PREFILL_STEP_SIZE = 2048


def default_parallel() -> int:
    """Batch capacity chosen from the device MLX runs on."""
    import mlx.core as mx

    return METAL_DEFAULT_PARALLEL if mx.metal.is_available() else CPU_DEFAULT_PARALLEL


class MlxEngine(ThreadedEngine[Scheduler]):
    """Engine options: `parallel` (sequences decoded together; default 32 on Metal, 4 on
    CPU) and `prefill_step_size` (prompt tokens evaluated per step, default 2048 as in mlx-lm).
    """

    name = "mlx"
    capabilities = CAPABILITIES["mlx"]

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self._model: nn.Module | None = None
        self._tokenizer: Any = None  # transformers tokenizer (of any class): chat template, special tokens
        self._encoder: Tokenizer | None = None  # its `tokenizers` backend, parsing special tokens in text
        self._plain_encoder: Tokenizer | None = None  # the same backend never parsing them, for raw prompts
        self._eos_ids: frozenset[int] = frozenset()
        self.parallel: int | None = None  # batch capacity, known once loaded

    @property
    def slots(self) -> int | None:
        return self.parallel  # requests beyond the batch wait in the admission queue

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            importlib.import_module("mlx.core")
            importlib.import_module("mlx_lm")
        except ImportError as exc:
            raise EngineUnavailableError(
                f"the MLX engine needs mlx and mlx-lm (pip install mlx-lm; on Linux also mlx[cpu]): {exc}"
            ) from exc
        options = self.spec.options
        parallel = int(options.get("parallel") or default_parallel())
        prefill = int(options.get("prefill_step_size") or DEFAULT_PREFILL_STEP_SIZE)
        if parallel < 1 or prefill < 1:
            raise EngineUnavailableError(
                f"MLX engine options parallel ({parallel}) and prefill_step_size ({prefill}) must be at least 1"
            )
        scheduler = Scheduler(parallel=parallel, prefill_step_size=prefill, name=self.spec.name)
        try:
            # Loaded on the scheduler thread too: every MLX call of this engine stays on it.
            model, tokenizer, eos_ids = scheduler.run(self._read_model)
            scheduler.serve(model, stop_tokens=eos_ids)
        except BaseException:
            scheduler.close()
            raise
        from tokenizers import Tokenizer

        # Whether special-token text is parsed is a flag on the Rust tokenizer, and
        # transformers flips it per call; two private copies, each with the flag fixed,
        # mean no call can change what another thread's call sees.
        serialized = tokenizer.backend_tokenizer.to_str()
        encoder, plain_encoder = Tokenizer.from_str(serialized), Tokenizer.from_str(serialized)
        encoder.encode_special_tokens = False
        plain_encoder.encode_special_tokens = True
        self._encoder, self._plain_encoder = encoder, plain_encoder
        self._tokenizer, self._eos_ids, self._scheduler = tokenizer, eos_ids, scheduler
        self.parallel = parallel
        self._model = model

    def unload(self) -> None:
        self._model = None  # the scheduler thread drops its own references as it stops
        scheduler = self._detach_scheduler()
        if scheduler is not None:
            scheduler.close(release=_clear_mlx_cache)
        self._tokenizer = self._encoder = self._plain_encoder = None

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        return self.prompt_ids(request)

    def _sequence(
        self, request: GenerationRequest, prompt: list[int], max_tokens: int, relay: ThreadRelay, prepared: Any = None
    ) -> Sequence:
        self._check_logit_bias(request.sampling.logit_bias)
        return Sequence(
            request_id=request.request_id,
            prompt=prompt,
            max_tokens=max_tokens,
            sampling=request.sampling,
            text=TextStream(self._encoders()[0], prompt),
            emit=relay.emit,
            cancelled=relay.cancelled,
        )

    def _check_logit_bias(self, logit_bias: tuple[tuple[int, float], ...]) -> None:
        """Refuse ids outside the vocabulary here: inside the batch they would fail every sequence."""
        vocab = getattr(getattr(self._model, "args", None), "vocab_size", None)
        bad = [token for token, _ in logit_bias if not 0 <= token < (vocab or 0)]
        if vocab is not None and bad:
            raise InvalidInputError(f"logit_bias token ids must be in [0, {vocab}); got {bad[:5]}", param="logit_bias")

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the model's own tokenizer (special tokens parsed, no BOS)."""
        encoder, _ = self._encoders()
        return len(encoder.encode(text, add_special_tokens=False).ids)

    def render_chat(self, messages: list[dict[str, Any]]) -> tuple[str, bool]:
        """Apply the model's chat template; returns the prompt and whether it adds BOS itself.

        The second value is always True, as for llama.cpp's formatter: a template writes
        whatever special tokens it wants, so nothing is prepended to it.
        """
        self._require()
        if not self._tokenizer.chat_template:
            raise EngineUnavailableError(f"model {self.spec.name} has no chat template", param="messages")
        prompt: str = render_template(
            lambda ready: self._tokenizer.apply_chat_template(ready, tokenize=False, add_generation_prompt=True),
            messages,
        )
        return prompt, True

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The token ids the model is fed for `request`."""
        encoder, plain_encoder = self._encoders()
        param = input_param(request)
        if request.messages is not None:
            # The template writes its own BOS and markers, as llama.cpp's formatter assumes.
            prompt, _ = self.render_chat(list(request.messages))
            utf8(prompt, param=param)  # the Rust tokenizer cannot take a lone surrogate either
            ids = encoder.encode(prompt, add_special_tokens=False).ids
        else:
            utf8(request.prompt or "", param=param)
            # Raw text is data: "<|im_end|>" typed by a user must not become a control token.
            ids = plain_encoder.encode(request.prompt or "", add_special_tokens=True).ids
        require_tokens(ids, request, self.spec.name)
        return ids

    def _require(self) -> nn.Module:
        if self._model is None:
            raise EngineUnavailableError(f"model {self.spec.name} is not loaded")
        return self._model

    def _encoders(self) -> tuple[Tokenizer, Tokenizer]:
        """The tokenizer that parses special-token text, and the one that never does."""
        self._require()
        if self._encoder is None or self._plain_encoder is None:
            raise EngineUnavailableError(f"model {self.spec.name} is not loaded")
        return self._encoder, self._plain_encoder

    def _read_model(self) -> tuple[nn.Module, Any, frozenset[int]]:
        """Runs on the engine thread: model, transformers tokenizer and end-of-generation ids."""
        source = self.spec.source
        try:
            if os.path.isdir(source):
                import mlx_lm

                loaded = mlx_lm.load(source)
                model, wrapper = loaded[0], loaded[1]
                if getattr(wrapper._tokenizer, "backend_tokenizer", None) is None:
                    raise EngineUnavailableError(f"{source} has no fast tokenizer (tokenizer.json)")
                return model, wrapper._tokenizer, frozenset(wrapper.eos_token_ids)
            if os.path.isfile(source) and source.lower().endswith(".gguf"):
                from .mlx_gguf import load_gguf

                gguf = load_gguf(source)
                return gguf.model, gguf.tokenizer, gguf.eos_token_ids
        except (ValueError, OSError, KeyError, RuntimeError) as exc:  # mx.load reports bad files as RuntimeError
            raise EngineUnavailableError(f"MLX could not load {source}: {exc}") from exc
        # mlx_lm.load would treat anything else as a hub id and download it; we never do.
        raise EngineUnavailableError(f"MLX model source {source!r} is neither a model directory nor a .gguf file")


def _clear_mlx_cache() -> None:
    """Hand MLX's buffer pool back to the system (run on the MLX thread, after the last step)."""
    import mlx.core as mx

    mx.clear_cache()
