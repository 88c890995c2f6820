"""transformers backend: ``AutoModelForCausalLM`` from a local folder (CPU, or CUDA via ``llm.device``)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.outputs import GenerationChunk
from pydantic import PrivateAttr

from rag_app.errors import MissingDependencyError, ModelNotFoundError
from rag_app.llm.base import LocalLLM

if TYPE_CHECKING:
    from rag_app.settings import LLMSettings

logger = logging.getLogger(__name__)


class TransformersLLM(LocalLLM):
    """A causal LM and its tokenizer; streams through ``TextIteratorStreamer``."""

    model: Any
    tokenizer: Any
    do_sample: bool = True
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "transformers-local"

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        import torch
        from transformers import TextIteratorStreamer

        # The template may already carry BOS; the tokenizer must not add a second one.
        has_bos = bool(self.bos_token) and prompt.startswith(self.bos_token)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=not has_bos)
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        generate_kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": kwargs.get("max_new_tokens", self.max_new_tokens),
            "streamer": streamer,
            "repetition_penalty": self.repeat_penalty,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if self.temperature > 0:
            generate_kwargs.update(
                do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k
            )
        else:
            generate_kwargs.update(do_sample=False)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**generate_kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.on_finalized_text("", stream_end=True)

        with self._lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            text_so_far = ""
            for text in streamer:
                if not text:
                    continue
                text_so_far += text
                if stop and any(s in text_so_far for s in stop):
                    break
                chunk = GenerationChunk(text=text)
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            worker.join()
        if errors:
            raise errors[0]


def create(settings: LLMSettings) -> TransformersLLM:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(
            "the transformers backend needs torch and transformers: pip install torch==2.13.0 transformers"
        ) from exc
    if settings.model_path is None:
        raise ModelNotFoundError("the transformers backend needs llm.model_path (a local model folder)")
    path = Path(settings.model_path).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(f"model folder not found: {path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(settings.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load model from {path}: {exc}") from exc
    model.to(settings.device)
    model.eval()
    trained = getattr(model.config, "max_position_embeddings", None) or 2048
    n_ctx = settings.n_ctx or min(int(trained), settings.max_auto_ctx)
    return TransformersLLM(
        model=model,
        tokenizer=tokenizer,
        context_window=n_ctx,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        repeat_penalty=settings.repeat_penalty,
        chat_template=getattr(tokenizer, "chat_template", None),
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
        model_name=path.name,
    )
