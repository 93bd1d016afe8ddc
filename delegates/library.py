"""Loading the built libraries (see build.py) and the ctypes view of the C core."""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

from .build import CORE, ET_LIB

_lock = threading.Lock()
_core = None
_et_loaded = False


class AttnArgs(ctypes.Structure):
    _fields_ = [(n, t) for n, t in [
        ("q", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p),
        ("k_ring", ctypes.c_void_p), ("k_sink", ctypes.c_void_p), ("v_cache", ctypes.c_void_p),
        ("dk_mask", ctypes.c_void_p), ("dk_val", ctypes.c_void_p), ("dk_end", ctypes.c_void_p),
        ("k_hat", ctypes.c_void_p), ("k_ckpt", ctypes.c_void_p), ("out", ctypes.c_void_p),
        ("seq_len", ctypes.c_int64), ("n_heads", ctypes.c_int64), ("n_kv_heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64), ("max_len", ctypes.c_int64), ("ring_len", ctypes.c_int64),
        ("v_format", ctypes.c_int64), ("start_pos", ctypes.c_int64),
        ("theta", ctypes.c_float), ("gamma", ctypes.c_float), ("w_max", ctypes.c_int64),
        ("w_decode", ctypes.c_int64), ("layer", ctypes.c_int64),
        ("parallel", ctypes.c_void_p), ("pool_ctx", ctypes.c_void_p), ("dk_rows", ctypes.c_int64)]]


class DenseArgs(ctypes.Structure):
    _fields_ = [(n, t) for n, t in [
        ("q", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p),
        ("k_cache", ctypes.c_void_p), ("v_cache", ctypes.c_void_p), ("out", ctypes.c_void_p),
        ("seq_len", ctypes.c_int64), ("n_heads", ctypes.c_int64), ("n_kv_heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64), ("max_len", ctypes.c_int64), ("v_format", ctypes.c_int64),
        ("k_format", ctypes.c_int64), ("start_pos", ctypes.c_int64), ("parallel", ctypes.c_void_p),
        ("pool_ctx", ctypes.c_void_p)]]


class Counts(ctypes.Structure):
    _fields_ = [("dk_zeros", ctypes.c_uint64), ("dk_elements", ctypes.c_uint64),
                ("macs_performed", ctypes.c_uint64), ("macs_dense", ctypes.c_uint64), ("calls", ctypes.c_uint64)]


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ImportError(f"{path.name} is not built: run `python -m delegates.build` (install.sh does)")
    return path


def core() -> ctypes.CDLL:
    """The C core (no ExecuTorch dependency): kernel entry point, counters, C API."""
    global _core
    with _lock:
        if _core is None:
            lib = ctypes.CDLL(str(_require(CORE)))
            lib.dlm_delta_attention_f32.argtypes = [ctypes.POINTER(AttnArgs), ctypes.c_char_p, ctypes.c_size_t]
            lib.dlm_delta_attention_f32.restype = ctypes.c_int
            lib.dlm_dense_attention_f32.argtypes = [ctypes.POINTER(DenseArgs), ctypes.c_char_p, ctypes.c_size_t]
            lib.dlm_dense_attention_f32.restype = ctypes.c_int
            lib.dlm_stats_read.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.POINTER(Counts)]
            lib.dlm_stats_read.restype = ctypes.c_int
            lib.dlm_stats_num_layers.restype = ctypes.c_int64
            lib.dlm_kernel_arch.restype = ctypes.c_char_p
            lib.dlm_force_scalar.argtypes = [ctypes.c_int]
            lib.dlm_set_num_threads.argtypes = [ctypes.c_int]
            lib.dlm_set_num_threads.restype = ctypes.c_int
            lib.dlm_get_num_threads.restype = ctypes.c_int
            lib.dlm_band_width.argtypes = [ctypes.c_int64, ctypes.c_float, ctypes.c_int64, ctypes.c_int64]
            lib.dlm_band_width.restype = ctypes.c_int64
            lib.dlm_ring_len.argtypes = [ctypes.c_int64, ctypes.c_float, ctypes.c_int64, ctypes.c_int64]
            lib.dlm_ring_len.restype = ctypes.c_int64
            for f in (lib.dlm_dk_rows, lib.dlm_dk_per_key):
                f.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
                f.restype = ctypes.c_int64
            lib.dlm_cache_row_bytes.argtypes = [ctypes.c_int64, ctypes.c_int64]
            lib.dlm_cache_row_bytes.restype = ctypes.c_int64
            lib.dlm_ckpt_len.argtypes = [ctypes.c_int64]
            lib.dlm_ckpt_len.restype = ctypes.c_int64
            _core = lib
    return _core


def load_executorch_kernels() -> None:
    """Register deltallm::delta_attention.out and deltallm::dense_attention.out with the ExecuTorch runtime of this process.

    The executorch pybindings must be imported first (loading a library that links
    _portable_lib before that import aborts the process)."""
    global _et_loaded
    from executorch.extension.pybindings import portable_lib  # noqa: F401

    core()
    with _lock:
        if not _et_loaded:
            ctypes.CDLL(str(_require(ET_LIB)))
            _et_loaded = True
