"""KV state cache: llama.cpp's state after a prompt's stable prefix (system prompt + sources), on disk.

A second question over the same documents — in another process, or after a condense prompt has replaced
what llama.cpp holds in memory — restores that state and evaluates only the rest of its prompt (the earlier
turns and the question). A state is keyed by the model file (path, size, mtime), the window, the RoPE and KV
settings, and the prefix's tokens (so the documents' text): a changed document gives another key, and its old
state is no longer found and goes first when the cache is full. Files are bounded in total size
(least-recently used go first); ``llm.state_cache_mb = 0`` turns the cache off.

The file holds the prefix's token ids and llama.cpp's own state bytes (``llama_state_get_data``), not
llama-cpp-python's ``LlamaState`` pickle: that one carries a logits array of ``n_batch × n_vocab`` floats
(100 MB for SmolLM2) that the next evaluation overwrites anyway.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAGIC = b"RAGKV1\n"
SUFFIX = ".kvstate"


@dataclass
class CacheStats:
    """What the cache did (tests and benches read it)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    last_restored_tokens: int = 0


@dataclass
class KVStateCache:
    """States of prompt prefixes of at least ``min_tokens`` tokens, in ``directory``, at most ``max_bytes``."""

    directory: Path
    max_bytes: int
    #: What makes one model's state unusable by another: file identity, n_ctx, RoPE, KV type.
    identity: dict[str, Any]
    min_tokens: int = 1024
    stats: CacheStats = field(default_factory=CacheStats)

    def key(self, tokens: Sequence[int]) -> str:
        h = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode())
        h.update(struct.pack(f"<{len(tokens)}i", *tokens))
        return h.hexdigest()[:40]

    def path(self, tokens: Sequence[int]) -> Path:
        return self.directory / f"{self.key(tokens)}{SUFFIX}"

    # --- llama.cpp side -------------------------------------------------------------------------------------

    def prepare(self, client: Any, prompt_tokens: Sequence[int], prefix_len: int) -> bool:
        """Make ``client`` hold the KV state of ``prompt_tokens[:prefix_len]``: already there, restored from a
        file (True), or evaluated now and stored. Then ``create_completion`` evaluates only the suffix."""
        prefix = list(prompt_tokens[:prefix_len])
        if len(prefix) < self.min_tokens:
            return False
        held = _common(client.input_ids[: client.n_tokens].tolist(), prefix)
        if held >= len(prefix):  # llama.cpp's own prefix match does it
            return False
        path = self.path(prefix)
        if path.is_file() and self._restore(client, path, prefix):
            self.stats.hits += 1
            self.stats.last_restored_tokens = len(prefix)
            return True
        self.stats.misses += 1
        client.n_tokens = held  # eval() drops the KV cells past n_tokens itself
        client.eval(prefix[held:])
        self._store(client, path, prefix)
        return False

    def _restore(self, client: Any, path: Path, prefix: list[int]) -> bool:
        import llama_cpp
        import numpy as np

        try:
            with path.open("rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise ValueError("not a state file")
                (head_len,) = struct.unpack("<I", f.read(4))
                head = json.loads(f.read(head_len))
                ids = np.frombuffer(f.read(4 * head["n_tokens"]), dtype=np.intc)
                data = f.read()
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("unreadable KV state %s (%s); dropped", path.name, exc)
            path.unlink(missing_ok=True)
            return False
        if ids.tolist() != prefix or len(data) != head["size"]:
            logger.warning("KV state %s does not match its prompt; dropped", path.name)
            path.unlink(missing_ok=True)
            return False
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        # What Llama.load_state does, less the logits copy (the suffix's evaluation recomputes them).
        if llama_cpp.llama_state_set_data(client._ctx.ctx, buf, len(data)) != len(data):
            logger.warning("llama.cpp refused KV state %s; dropped", path.name)
            path.unlink(missing_ok=True)
            client.n_tokens = 0
            client._ctx.kv_cache_clear()
            return False
        client.input_ids[: len(ids)] = ids
        client.n_tokens = len(ids)
        client._requires_eval = True
        client._seed = head["seed"]
        os.utime(path)  # least recently used goes first
        logger.info("restored the KV state of a %d-token prompt prefix (%s)", len(ids), path.name)
        return True

    def _store(self, client: Any, path: Path, prefix: list[int]) -> None:
        import llama_cpp

        size = llama_cpp.llama_state_get_size(client._ctx.ctx)
        if size > self.max_bytes:
            logger.info("KV state of %d tokens (%d MB) exceeds the cache; not stored", len(prefix), size >> 20)
            return
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_get_data(client._ctx.ctx, buf, size)
        head = json.dumps({"n_tokens": len(prefix), "size": n, "seed": client._seed}).encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                f.write(MAGIC + struct.pack("<I", len(head)) + head)
                f.write(struct.pack(f"<{len(prefix)}i", *prefix))
                f.write(memoryview(buf)[:n])
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("could not store a KV state in %s: %s", self.directory, exc)
            tmp.unlink(missing_ok=True)
            return
        self.stats.stores += 1
        self.evict()

    def evict(self) -> None:
        """Delete the least recently used state files until the rest fit ``max_bytes``."""
        files = []
        for p in self.directory.glob(f"*{SUFFIX}"):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime_ns, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files, key=lambda f: f[0]):
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            self.stats.evictions += 1

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob(f"*{SUFFIX}")) if self.directory.is_dir() else 0


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def model_identity(path: Path, n_ctx: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Everything a state depends on besides the tokens (a file replaced in place changes size or mtime)."""
    st = path.stat()
    return {
        "model": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "n_ctx": n_ctx,
        "rope_freq_base": kwargs.get("rope_freq_base"),
        "rope_freq_scale": kwargs.get("rope_freq_scale"),
        "type_k": kwargs.get("type_k"),
        "flash_attn": kwargs.get("flash_attn"),
    }
