"""Character-level tokenizer built with the `tokenizers` library.

Ids (SPEC): PAD 0, UNK 1, BOS 2, EOS 3, digits 0-9 -> 4-13, then the operators ``+ - x =``, the sorting
separators ``, :`` and the sorting labels. Labels are letters other than ``x`` so that no label can equal an
operator or a separator (the original's list contained ``,`` and ``:``).

Everything else in arith asks this object for ids (``digit_ids``, ``eq_id``...) instead of hard-coding them.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from arith.errors import DataError
from arith.files import atomic_write_text

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
DIGITS = "0123456789"
OPERATORS = "+-x="
SEPARATORS = ",:"
LABELS = "".join(c for c in string.ascii_lowercase + string.ascii_uppercase if c != "x")
FILENAME = "tokenizer.json"


def _vocab() -> dict[str, int]:
    symbols = list(SPECIALS) + list(DIGITS) + list(OPERATORS) + list(SEPARATORS) + list(LABELS)
    return {s: i for i, s in enumerate(symbols)}


class ArithTokenizer:
    """Thin wrapper over a `tokenizers.Tokenizer` with the ids arith needs and a vectorized encoder."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        missing = [s for s in _vocab() if s not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks symbols {missing[:5]}...: not an arith tokenizer")
        self.vocab = vocab
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (vocab[s] for s in SPECIALS)
        self.digit_ids = [vocab[d] for d in DIGITS]  # digit_ids[d] is the id of digit d
        self.eq_id = vocab["="]
        self.op_ids = {op: vocab[op] for op in OPERATORS if op != "="}
        self.comma_id = vocab[","]
        self.colon_id = vocab[":"]
        self.label_ids = [vocab[c] for c in LABELS]
        self.vocab_size = len(vocab)
        # byte -> id lookup table for vectorized encoding of ASCII text
        self.lut = np.full(256, self.unk_id, dtype=np.int64)
        for s, i in vocab.items():
            if len(s) == 1:
                self.lut[ord(s)] = i
        self.id_to_char = {i: s for s, i in vocab.items()}
        # digit id -> digit value (-1 for non digits), as an array indexable by id
        self.digit_value = np.full(self.vocab_size, -1, dtype=np.int64)
        for d, i in enumerate(self.digit_ids):
            self.digit_value[i] = d

    # ---------------------------------------------------------------- construction / io
    @classmethod
    def build(cls) -> ArithTokenizer:
        tok = Tokenizer(models.WordLevel(vocab=_vocab(), unk_token="[UNK]"))
        # every character is its own token
        tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tok.decoder = decoders.Fuse()
        tok.add_special_tokens(list(SPECIALS))
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> ArithTokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        if not path.exists():
            raise DataError(
                f"no tokenizer at {path}: every arith run and dataset shares one, so copy {FILENAME} from another "
                "run, or re-run the training command, which writes it"
            )
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises its own types for unreadable or garbled files
            raise DataError(
                f"cannot read the tokenizer {path}: {e}; copy {FILENAME} from another run"
            ) from None

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILENAME
        atomic_write_text(path, self.tokenizer.to_str(pretty=True))  # a failed write leaves the old file
        return path

    # ---------------------------------------------------------------- encoding
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, stop_at_eos: bool = True) -> str:
        """Ids -> text; stops at the first EOS (when asked) and drops PAD/BOS."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            if i in (self.pad_id, self.bos_id, self.eos_id):
                continue
            out.append(self.id_to_char.get(i, "?"))
        return "".join(out)

    def encode_fast(self, text: str) -> np.ndarray:
        """Vectorized encoding of plain ASCII text (equal to `encode` for arith's alphabet)."""
        return self.lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]

    def is_digit(self, ids: np.ndarray) -> np.ndarray:
        return self.digit_value[ids] >= 0
