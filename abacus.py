"""Abacus embedding (McLeish et al. 2024, "Transformers Can Do Arithmetic with the Right Embeddings",
arXiv 2405.17399), standalone: torch only, copy this file into any project.

Every maximal run of consecutive digit tokens is one number; a digit's position is its 1-based index within
its run (numbers are written least-significant digit first, so 1 = the units digit); every other token gets
position 0. In training one random offset k in 0..max_k (the paper: 100), shared by the batch, is added to
every non-zero position, so that the rows used by long numbers at test time are trained too. The positions
index a learned table whose output is added to the token embedding.

Usage::

    import torch
    from abacus import Abacus

    digit_ids = range(4, 14)                # the tokenizer's ids of "0".."9"
    emb = Abacus(digit_ids, embedding_dim=64, max_seq_length=256, max_k=100)
    ids = torch.tensor([[6, 5, 14, 9, 8, 7, 17, 11, 9, 7, 3]])  # "21+543=753" + EOS: 12+345=357 reversed
    tok_emb = torch.nn.Embedding(100, 64)
    h = tok_emb(ids) + emb(ids)             # training: random k; after emb.eval(): k = eval_k
    emb.positions(ids, k=0)                 # tensor([[1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0]])

Run ``python abacus.py`` for a small demo.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Abacus(nn.Module):
    """Learned digit-position embedding. ``forward(ids (B, T), k=None) -> (B, T, embedding_dim)``."""

    def __init__(
        self, digit_ids, embedding_dim: int, max_seq_length: int = 256, max_k: int = 100, eval_k: int = 0
    ):
        super().__init__()
        digit_ids = torch.as_tensor(list(digit_ids) if not torch.is_tensor(digit_ids) else digit_ids).long()
        self.register_buffer("digit_ids", digit_ids, persistent=False)
        self.embedding = nn.Embedding(max_seq_length, embedding_dim)  # row 0: every non-digit token
        self.max_seq_length = max_seq_length
        self.max_k = max_k
        self.eval_k = eval_k

    def offset(self, k: int | None = None) -> int:
        if k is not None:
            return int(k)
        if self.training:
            return int(torch.randint(0, self.max_k + 1, ()).item())  # one draw, shared by the batch
        return self.eval_k

    def positions(self, ids: torch.Tensor, k: int | None = None) -> torch.Tensor:
        is_digit = torch.isin(ids, self.digit_ids)  # (B, T)
        digits = is_digit.long()
        count = digits.cumsum(dim=1)  # digits seen so far, this one included
        # at each non-digit, freeze the count; carrying the last frozen count forward gives the number of
        # digits that came before the current run
        before_run = torch.where(is_digit, torch.zeros_like(count), count).cummax(dim=1).values
        pos = (count - before_run) * digits  # (B, T): 1-based index in the run, 0 for non-digits
        k = self.offset(k)
        pos = pos + k * digits
        if pos.numel() and int(pos.max()) >= self.max_seq_length:
            raise ValueError(
                f"Abacus table has {self.max_seq_length} rows but positions up to {int(pos.max())} are needed "
                f"(longest number + offset k={k}): raise max_seq_length or shorten the input"
            )
        return pos

    def forward(self, ids: torch.Tensor, k: int | None = None) -> torch.Tensor:
        return self.embedding(self.positions(ids, k))


if __name__ == "__main__":
    chars = "0123456789+="
    to_id = {c: i + 4 for i, c in enumerate(chars)}  # ids 0-3 are specials, as in arith's tokenizer
    text = "21+543=753"  # 12 + 345 = 357, every number reversed
    ids = torch.tensor([[to_id[c] for c in text]])
    torch.manual_seed(0)
    emb = Abacus(digit_ids=[to_id[d] for d in "0123456789"], embedding_dim=8, max_seq_length=32, max_k=10)
    print("text        ", " ".join(text))
    print("positions   ", emb.positions(ids, k=0).tolist()[0])
    print("with k = 5  ", emb.positions(ids, k=5).tolist()[0])
    emb.train()
    print("training (random k):", emb.positions(ids).tolist()[0])
    emb.eval()
    print("embedding output shape:", tuple(emb(ids).shape))
    try:
        emb.positions(torch.tensor([[to_id["1"]] * 40]))
    except ValueError as err:
        print("too long ->", err)
