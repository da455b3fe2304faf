"""A compressed generator file, as Deep Compression (Han et al.) builds one: prune -> share -> Huffman.

Per conv layer of a (pruned) generator:
1. the non-zero weights' positions are stored as relative indices (the gap since the previous
   non-zero, at most MAX_GAP; a longer gap is bridged by FILLER entries, as in the paper);
2. the non-zero values are shared: ``kmeans`` clusters them into 2**bits centroids (scikit-learn's
   KMeans, linearly initialised over [min, max], the initialisation the paper found best), or
   ``linear`` maps them to symmetric integer levels of one scale per layer;
3. both streams are Huffman-coded (dahuffman).
Other tensors (BatchNorm) are stored raw. The file is data, never code: 8 magic bytes, a JSON
header (format version, the model's config and widths, each layer's codebook and stream places),
then the coded streams. ``read_generator`` rebuilds exactly the quantized weights and refuses a
corrupt, truncated or foreign file with a one-line CompressedFileError.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganlab.config import TrainConfig, check_architecture, check_choice, check_range, config_from_dict, default_widths
from ganlab.errors import GanlabError
from ganlab.gan.models import Generator, prunable_layers

MAGIC = b"GANLABZ\x01"
FORMAT_VERSION = 1
SCHEMES = ("kmeans", "linear")
MAX_GAP = 255  # a relative index fits 8 bits; longer gaps take filler entries
FILLER = 1 << 20  # the value symbol of a filler entry (no weight there): no code (< 2**16) is this
HEADER_KEYS = {"format", "scheme", "bits", "config", "widths", "layers", "raw"}
RAW_DTYPES = ("float32", "int64")  # BatchNorm's statistics and its num_batches_tracked


class CompressedFileError(GanlabError):
    """A compressed generator file that cannot be read: corrupt, truncated or not ganlab's."""


def check_settings(bits: int, scheme: str) -> None:
    check_choice("scheme", scheme, SCHEMES)
    check_range("bits", bits, low=2 if scheme == "linear" else 1, high=16, integer=True)


def quantize(weights: np.ndarray, bits: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(codebook float32, code per weight) for 1-D non-zero ``weights``."""
    if scheme == "linear":
        levels = 2 ** (bits - 1) - 1
        scale = np.float32(np.abs(weights).max() / levels) if len(weights) else np.float32(1.0)
        codes = np.clip(np.rint(weights / scale), -levels, levels).astype(np.int64)
        return np.array([scale], dtype=np.float32), codes
    unique = np.unique(weights)
    k = min(2 ** bits, len(unique))
    if k == len(unique):  # no more values than centroids: each value is its own
        return unique.astype(np.float32), np.searchsorted(unique, weights)
    from sklearn.cluster import KMeans

    init = np.linspace(weights.min(), weights.max(), k).reshape(-1, 1)
    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=100, random_state=0)
    codes = km.fit_predict(weights.reshape(-1, 1).astype(np.float64))
    return km.cluster_centers_.ravel().astype(np.float32), codes.astype(np.int64)


def dequantize(codebook: np.ndarray, codes: np.ndarray, scheme: str) -> np.ndarray:
    if scheme == "linear":
        return (codes.astype(np.float32) * codebook[0]).astype(np.float32)
    return codebook[codes]


def _gaps(positions: np.ndarray) -> tuple[list[int], list[int]]:
    """Relative indices and a FILLER mask: each stored entry is (gap, is_filler)."""
    gaps, fill = [], []
    previous = -1
    for p in positions.tolist():
        gap = p - previous
        while gap > MAX_GAP:
            gaps.append(MAX_GAP)
            fill.append(1)
            gap -= MAX_GAP
        gaps.append(gap)
        fill.append(0)
        previous = p
    return gaps, fill


def _huffman(symbols: list[int]) -> tuple[bytes, list[list[int]]]:
    from dahuffman import HuffmanCodec

    freqs = Counter(symbols)
    table = sorted(freqs.items())  # stored in the header; the same table rebuilds the same code
    return HuffmanCodec.from_frequencies(dict(table)).encode(symbols), [[int(s), int(n)] for s, n in table]


def _unhuffman(data: bytes, table: list[list[int]], count: int) -> list[int]:
    from dahuffman import HuffmanCodec

    symbols = HuffmanCodec.from_frequencies({int(s): int(n) for s, n in table}).decode(data)
    if len(symbols) != count:
        raise ValueError(f"a stream decoded to {len(symbols)} symbols, the header says {count}")
    return symbols


def compress_generator(generator: Generator, config: TrainConfig, bits: int = 5,
                       scheme: str = "kmeans") -> tuple[bytes, dict[str, torch.Tensor]]:
    """The file's bytes, and the quantized state_dict they decode to (for the round-trip contract)."""
    check_settings(bits, scheme)
    header: dict[str, Any] = {"format": FORMAT_VERSION, "scheme": scheme, "bits": bits,
                              "config": asdict(config), "widths": generator.widths, "layers": [], "raw": []}
    payload = bytearray()
    conv_keys = {f"main.{i}.weight" for i, _ in prunable_layers(generator)}
    quantized: dict[str, torch.Tensor] = {}
    for key, tensor in generator.state_dict().items():
        t = tensor.detach().cpu()
        if key not in conv_keys:
            raw = t.contiguous().numpy().tobytes()
            header["raw"].append({"key": key, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                                  "offset": len(payload), "nbytes": len(raw)})
            payload += raw
            quantized[key] = t.clone()
            continue
        flat = t.flatten().numpy().astype(np.float32)
        positions = np.flatnonzero(flat)
        codebook, codes = quantize(flat[positions], bits, scheme)
        gaps, fill = _gaps(positions)
        values, k = [], 0
        for is_filler in fill:  # filler entries carry no value
            values.append(FILLER if is_filler else int(codes[k]))
            k += not is_filler
        gap_bytes, gap_table = _huffman(gaps)
        value_bytes, value_table = _huffman(values)
        header["layers"].append({"key": key, "shape": list(t.shape), "codebook": codebook.tolist(),
                                 "entries": len(gaps), "gaps": [len(payload), len(gap_bytes), gap_table],
                                 "values": [len(payload) + len(gap_bytes), len(value_bytes), value_table]})
        payload += gap_bytes + value_bytes
        dense = np.zeros_like(flat)
        dense[positions] = dequantize(codebook, codes, scheme)
        quantized[key] = torch.from_numpy(dense).view(t.shape)
    head = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + bytes(payload), quantized


def read_generator(path: str | Path) -> tuple[Generator, TrainConfig]:
    """The generator a compressed file holds (eval mode, CPU) and its training config."""
    path = Path(path)
    if not path.is_file():
        raise CompressedFileError(f"compressed generator {path} does not exist")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise CompressedFileError(f"{path} is not a ganlab compressed generator (its first bytes are not ganlab's)")
    try:
        (size,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
        start = len(MAGIC) + 4 + size
        header = json.loads(data[len(MAGIC) + 4:start])
        if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {str(header.get('format') if isinstance(header, dict) else None)[:20]}, "
                             f"this ganlab reads {FORMAT_VERSION}")
        if set(header) != HEADER_KEYS:
            odd = sorted(set(header) ^ HEADER_KEYS)
            raise ValueError(f"header fields {', '.join(str(k)[:20] for k in odd[:3])} are not ganlab's")
        check_settings(header["bits"], header["scheme"])  # an unknown scheme is refused, not guessed at
        payload = memoryview(data)[start:]
        config = config_from_dict(TrainConfig, header["config"], where=str(path)).resolved()
        widths = header["widths"] if header["widths"] is not None else default_widths(config.ngf, config.image_size,
                                                                                      generator=True)
        check_architecture("its generator", widths, nc=config.nc, nz=config.nz,
                           hidden=len(default_widths(1, config.image_size, generator=True)))
        generator = Generator(config.nz, config.ngf, config.nc, config.image_size, widths)
        state = _decode_state(header, payload, {k: tuple(v.shape) for k, v in generator.state_dict().items()})
        generator.load_state_dict(state, strict=True)
    except CompressedFileError:
        raise
    except Exception as exc:  # anything a damaged file can raise: one line, never a traceback
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CompressedFileError(f"{path} is corrupt or truncated ({detail})") from None
    return generator.eval(), config


def _decode_state(header: dict, payload: memoryview, shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """The state_dict the header's entries decode to, each entry checked against the generator's own ``shapes``
    (each key once, its shape, its byte count) and each payload range read at most once, before anything of the
    entry's size is allocated: what a file can make this allocate is bounded by the generator and the file."""
    taken: list[tuple[int, int]] = []

    def chunk(offset: Any, nbytes: Any) -> bytes:
        if not (isinstance(offset, int) and isinstance(nbytes, int)) or offset < 0 or nbytes < 0 \
                or offset + nbytes > len(payload):
            raise ValueError("a stream lies beyond the end of the file")
        if any(offset < end and start < offset + nbytes for start, end in taken):
            raise ValueError("two entries share payload bytes")
        taken.append((offset, offset + nbytes))
        return bytes(payload[offset:offset + nbytes])

    def claim(key: Any, shape: Any) -> tuple:
        if key not in shapes or key in state:
            raise ValueError(f"entry {str(key)[:40]} is not one of the generator's tensors, or comes twice")
        if not isinstance(shape, list) or tuple(shape) != shapes[key]:
            raise ValueError(f"{key}: shape {str(shape)[:40]}, the generator's is {list(shapes[key])}")
        return shapes[key]

    state: dict[str, torch.Tensor] = {}
    for raw in header["raw"]:
        shape = claim(raw["key"], raw["shape"])
        if raw["dtype"] not in RAW_DTYPES:
            raise ValueError(f"{raw['key']}: dtype {str(raw['dtype'])[:20]} is not one ganlab writes")
        dtype = np.dtype(raw["dtype"])
        if raw["nbytes"] != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"{raw['key']}: {str(raw['nbytes'])[:20]} bytes do not make its shape")
        array = np.frombuffer(chunk(raw["offset"], raw["nbytes"]), dtype=dtype)
        state[raw["key"]] = torch.from_numpy(array.copy()).view(shape)
    for layer in header["layers"]:
        claim(layer["key"], layer["shape"])
        if not isinstance(layer["entries"], int) or layer["entries"] > 2 * int(np.prod(layer["shape"])) + 1:
            raise ValueError(f"{layer['key']}: {str(layer['entries'])[:20]} entries for {layer['shape']} weights")
        if len(layer["codebook"]) > 2 ** header["bits"] + 1:
            raise ValueError(f"{layer['key']}: a codebook of {len(layer['codebook'])} for {header['bits']} bits")
        gaps = _unhuffman(chunk(*layer["gaps"][:2]), layer["gaps"][2], layer["entries"])
        values = np.array(_unhuffman(chunk(*layer["values"][:2]), layer["values"][2], layer["entries"]))
        keep = values != FILLER
        positions = (np.cumsum(gaps) - 1)[keep]
        codebook = np.array(layer["codebook"], dtype=np.float32)
        n = int(np.prod(layer["shape"]))
        if len(positions) and (positions[-1] >= n or positions[0] < 0):
            raise ValueError(f"{layer['key']}: a position beyond the layer")
        dense = np.zeros(n, dtype=np.float32)
        dense[positions] = dequantize(codebook, values[keep], header["scheme"])
        state[layer["key"]] = torch.from_numpy(dense).view(layer["shape"])
    return state
