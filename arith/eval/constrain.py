"""Constrained greedy decoding for sorting's label answers (`eval.label_permutation`, `model.eval_label_permutation`).

A sorting answer in a label format (`label_first`, `label_last`) is a permutation of the prompt's labels:
`b,c,a` for `503:a,7:b,14:c=`. With the constraint on, each decoding step takes the best-scored token among those
that keep the answer such a permutation:

    a label      only one of the prompt's labels not written yet (no repeat, none the prompt lacks)
    EOS          only once every label of the prompt is written, and then nothing else (no trailing ',')
    the rest     (',', digits, ...) as the model scores them while labels are still to come

So the model still chooses which item comes next, and where a separator goes; the constraint only rules out the
answers no sorting can have. Off: plain greedy decoding, token for token.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LabelPermutation:
    """The labels each row of a batch has still to write: `mask` the next-token scores of the rows held, `wrote`
    their tokens, `select` the rows kept when finished ones leave the batch (`decode._Batch.drop`)."""

    def __init__(self, prompts: torch.Tensor, labels: Iterable[int], eos_id: int, vocab: int):
        """prompts (B, P) token ids (left PADs allowed); labels: the label token ids; vocab: the scores' width."""
        is_label = torch.zeros(vocab, dtype=torch.bool, device=prompts.device)
        is_label[torch.as_tensor(sorted(labels), dtype=torch.long, device=prompts.device)] = True
        seen = torch.zeros(len(prompts), vocab, dtype=torch.bool, device=prompts.device)
        seen.scatter_(1, prompts.long(), True)
        self.is_label = is_label  # (V,)
        self.left = seen & is_label  # (B, V): the row's prompt labels not written yet
        self.eos_id = eos_id

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, V) scores (logits, or a vote's probabilities) -> the same with the ruled-out tokens at -inf."""
        done = ~self.left.any(dim=1, keepdim=True)  # (B, 1): every label of the row written
        # labels written already or not in the prompt; after the last label, EOS alone (a lone 15-digit item: 'a,')
        banned = (self.is_label[None] & ~self.left) | done
        banned[:, self.eos_id] = ~done[:, 0]
        return scores.masked_fill(banned, float("-inf"))

    def wrote(self, tokens: torch.Tensor) -> None:
        """tokens (B,): the token each row held has just written (PAD for the finished ones)."""
        self.left[torch.arange(len(tokens), device=tokens.device), tokens] = False

    def select(self, keep: torch.Tensor) -> None:
        """Keep only these rows (B',) of the batch, in this order."""
        self.left = self.left[keep]
