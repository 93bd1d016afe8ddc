"""The on-device tokenizer (device/native/src/tokenizer.*, used by the app through JNI and by
`deltallm_runner tokenize`) against the `tokenizers` package, token for token, on real text:
SQuAD paragraphs and questions, chat turns with special tokens, non-ASCII, code, whitespace runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.datasets import squad_dev_path, squad_paragraphs
from tests.native_helpers import run_native

NON_ASCII = [
    "Zürich, São Paulo, Kraków and Øresund — naïve café façades.", "東京は日本の首都です。人口は約1400万人。",
    "Москва — столица России, 12 млн жителей.", "مرحبا بالعالم، هذا اختبار.", "emoji 👍🏽 and 🇫🇷 flags, ZWJ 👩‍💻",
    "Math: ∑ᵢ xᵢ² ≤ ∞, α≈0.6, θ∈[1.0, 1.2]", "Ελληνικά: Καλημέρα κόσμε", "한국어 텍스트와 숫자 ١٢٣ ४५६",
    "tabs\tand\u00a0no-break\u2003em space\u3000ideographic", "ﬁ ligature, Å vs Å (combining ring)",
]
CODE = ["def f(x):\n    return x ** 2  # square\n\n\nprint(f(12345))",
        "for (int i = 0; i < n; ++i) { s += a[i]; }", "  leading, trailing  \n\n\n  ", "I'm sure they'll've DONE IT'S",
        "'S 'T 'Re 'LL 'd'd''s", "3.14159 2024-11-21 1,000,000 007 x86_64 arm64-v8a", "\r\n\r\nWindows\r\nlines\r\n",
        "a  b   c    d\t\te\n \n", "https://example.org/a?b=c&d=e#f", "<tag attr=\"v\">text</tag>"]


def texts(special: list) -> list:
    doc = json.loads(squad_dev_path().read_text())
    questions = [qa["question"] for art in doc["data"] for p in art["paragraphs"] for qa in p["qas"]]
    out = squad_paragraphs(squad_dev_path())[::5][:160]          # 160 of the 803 distinct paragraphs
    assert len(out) == 160
    out += questions[5::33][:30]
    if len(special) >= 2:
        a, b = special[:2]
        out += [f"{a}user\n{q}{b}\n{a}assistant\n" for q in out[160:180]]
        out += [f"{a}system\nYou are helpful.{b}{a}user\nHi!{b}"]
    return out + NON_ASCII + CODE


def llama3_style_tokenizer(path: Path) -> Path:
    """A tokenizer.json with Llama-3's (and BitNet's) pipeline: the Llama-3 Split pattern, ByteLevel
    without its own split, BPE with ignore_merges, special header tokens; vocabulary trained here."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = squad_paragraphs(squad_dev_path())[:200]
    special = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=3000, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer_files(smollm2_8da8w, tiny_llama_fp32, tmp_path_factory):
    d = tmp_path_factory.mktemp("tokenizers")
    return {"smollm2": smollm2_8da8w[0] / "tokenizer.json", "tiny": tiny_llama_fp32[0] / "tokenizer.json",
            "llama3_style": llama3_style_tokenizer(d / "llama3_style.json")}


@pytest.mark.smollm2
@pytest.mark.parametrize("abi", ["x86_64", "arm64-v8a"])
@pytest.mark.parametrize("name", ["smollm2", "tiny", "llama3_style"])
def test_token_for_token_parity(runners, tokenizer_files, abi, name, tmp_path):
    from tokenizers import Tokenizer

    path = tokenizer_files[name]
    ref = Tokenizer.from_file(str(path))
    special = [t.content for t in ref.get_added_tokens_decoder().values() if t.special][1:]
    corpus = texts(special)
    assert len(corpus) >= 200
    inp = tmp_path / "texts.jsonl"
    inp.write_text("".join(json.dumps(t) + "\n" for t in corpus))
    r = run_native(runners[abi], abi, "tokenize", "--tokenizer", path, "--texts", inp)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(got) == len(corpus)
    mismatches = [(t[:60], g["ids"][:12], ref.encode(t, add_special_tokens=False).ids[:12])
                  for t, g in zip(corpus, got) if g["ids"] != ref.encode(t, add_special_tokens=False).ids]
    assert not mismatches, f"{len(mismatches)} of {len(corpus)} differ, e.g. {mismatches[:3]}"
    assert all(g["decoded"] == t for t, g in zip(corpus, got))          # byte-level BPE is lossless


@pytest.mark.parametrize("content,message", [
    ('{"model": {"type": "WordPiece", "vocab": {}}}', "unsupported model type WordPiece"),
    ('{"model": {"type": "BPE", "vocab": {}, "merges": []}, "normalizer": {"type": "NFKC"}}',
     "unsupported normalizer NFKC"),
    ('{"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Metaspace"}}',
     "unsupported pre_tokenizer Metaspace"),
    ('{"model": ', "not a tokenizer.json"),
])
def test_unsupported_tokenizer_named(runners, tmp_path, content, message):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    (tmp_path / "t.jsonl").write_text('"x"\n')
    r = run_native(runners["x86_64"], "x86_64", "tokenize", "--tokenizer", path, "--texts", tmp_path / "t.jsonl")
    assert r.returncode == 2 and message in r.stderr, r.stderr
