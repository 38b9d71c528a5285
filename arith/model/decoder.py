"""The looped decoder (McLeish et al. 2024, arXiv 2405.17399, SPEC "Architectures").

A block of `layers` distinct layers is applied `recurrences` times with tied weights; recurrences = 1 is the
standard transformer. With input injection the embedded input (token + absolute position) is added to the
hidden state before every block application after the first (the first one starts from the embedding
itself), so a looped model with one recurrence is exactly the plain stack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import torch
import torch.nn as nn

from arith.model.attention import (
    KVCache,
    answer_window_mask,
    causal_mask,
    item_digits_mask,
    item_window_mask,
    log_key_counts,
    number_window_mask,
    positions_of,
    prompt_digits_hidden_mask,
    prompt_window_mask,
    row_window_mask,
)
from arith.model.blocks import BLOCKS
from arith.model.config_checks import validate
from arith.model.numbers import LENGTH_CODES, number_features, openers, relative_lengths
from arith.model.positions import (
    REL_POS,
    abacus_positions,
    build_abs_pos,
    digit_table,
    digit_values,
    is_digit,
)


class DecoderCache:
    """State of KV-cached decoding.

    Holds the token history (a token's Abacus position depends on the digits before it), the offset k, the
    recurrence count and the left padding fixed by the first call, and one `KVCache` per (recurrence, layer) pair.
    reserve: the tokens it will hold in all, when known (prompt + answer), so that each KV storage is sized once.
    """

    def __init__(self, reserve: int = 0):
        self.tokens: torch.Tensor | None = None  # (B, tokens so far)
        self.k: int | None = None
        self.recurrences: int | None = None
        self.pad: torch.Tensor | None = None  # (B,) the left PADs of each row (None: none)
        self.kv: dict[tuple[int, int], KVCache] = {}
        self.reserve = reserve

    @property
    def length(self) -> int:
        return 0 if self.tokens is None else self.tokens.shape[1]

    def layer(self, recurrence: int, layer: int) -> KVCache:
        return self.kv.setdefault((recurrence, layer), KVCache(self.reserve))

    @classmethod
    def gather(cls, parts: list, tokens: torch.Tensor, pad: torch.Tensor, reserve: int = 0) -> DecoderCache:
        """The cache of a left-padded batch, tokens (B, S) and pad (B,) (the tensor the next calls pass), whose rows
        were prefilled in groups: parts, [(rows (n,) long, the cache of those rows without some of their left
        PADs)]. Each group's keys and values go to the right end of its rows; the PADs cut get zeros (no token that
        reads the cache sees them)."""
        out, first = cls(reserve), parts[0][1]
        out.tokens, out.k, out.recurrences, out.pad = tokens, first.k, first.recurrences, pad
        for key in first.kv:
            for rows, part in parts:
                out.layer(*key).place(rows, part.kv[key], tokens.shape[0], tokens.shape[1])
        return out

    def select(self, rows: torch.Tensor, pad: torch.Tensor | None = None) -> None:
        """Keep only these rows (B',) long of the batch, in this order (decoding drops the finished ones); pad: their
        left PADs, the tensor the next calls pass (None: no padding)."""
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, rows)
        self.pad = pad
        for kv in self.kv.values():
            kv.select(rows)


class ArithModel(nn.Module):
    def __init__(self, cfg, tok):
        super().__init__()
        validate(cfg)
        self.cfg = cfg
        self.abs_name = str(cfg.abs_pos)
        self.rel_positions = REL_POS[cfg.rel_pos].position_fn(cfg)  # (T, start, cached, training, device)
        self.inject = cfg.input_injection == "add"
        self.inject_every_layer = cfg.inject_every == "layer"
        self.recurrences, self.eval_recurrences = cfg.recurrences, cfg.eval_recurrences
        self.eval_k = cfg.eval_k
        self.attn_temperature = None  # test-time attention temperature (attention.set_attn_temperature)
        self.attn_log_n = bool(getattr(cfg, "attn_log_n", False))  # trained log-n scaling (attention.py)
        # digit keys a query sees: those within this many digit indices of its own (0 = all); eval may change it
        self.row_window = int(getattr(cfg, "row_window", 0))
        self.number_window = int(getattr(cfg, "number_window", 0))
        self.item_window = bool(getattr(cfg, "item_window", False))
        self.answer_window = int(getattr(cfg, "answer_window", 0))
        self.prompt_window = int(getattr(cfg, "prompt_window", 0))
        self.item_digits = int(getattr(cfg, "item_digits", 0))  # the digits of its number an item reads
        self.hide_prompt_digits = bool(getattr(cfg, "hide_prompt_digits", False))  # the answer reads no digit
        self.eq_id = tok.eq_id
        self.register_buffer("digit_lut", digit_table(tok), persistent=False)  # from the tokenizer

        self.tok_emb = nn.Embedding(tok.vocab_size, cfg.width)
        # model.opener_embedding: row vocab_size is "no opener" (a run of digits at the start of the row)
        self.opener_emb = nn.Embedding(tok.vocab_size + 1, cfg.width) if cfg.opener_embedding else None
        # model.length_feature: log(1 + L) times one learned vector (`number_lengths`)
        self.length_emb = (
            nn.Linear(1, cfg.width, bias=False) if getattr(cfg, "length_feature", False) else None
        )
        self.length_offset = bool(getattr(cfg, "length_offset", False))  # ... of L + k (model.length_offset)
        self.length_relative = bool(getattr(cfg, "length_relative", False))  # ... of 1 + L_max - L
        self.length_code = LENGTH_CODES[str(getattr(cfg, "length_code", "log"))]  # log(1 + L) or L / 10
        # model.value_feature=n: the number's top n digits as 0.d1...dn times one learned vector (`number_tops`)
        self.value_digits = int(getattr(cfg, "value_feature", 0))
        # model.value_in_length: ... or added to the length feature's L instead (log(1 + L + 0.d1...dn)), or to
        # both (model.value_vector with it)
        self.value_in_length = bool(getattr(cfg, "value_in_length", False))
        own = self.value_digits and (not self.value_in_length or bool(getattr(cfg, "value_vector", False)))
        self.value_emb = nn.Linear(1, cfg.width, bias=False) if own else None
        self.register_buffer(
            "digit_value", digit_values(tok) if self.value_digits else None, persistent=False
        )
        self.abs_pos = build_abs_pos(cfg, tok)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(BLOCKS[cfg.block](cfg, i) for i in range(cfg.layers))
        # forward's `pad` (left PADs) allowed: every part opts in (the position slots' and blocks' `left_pad`)
        self.pads_left = bool(
            self.abs_pos.left_pad
            and REL_POS[cfg.rel_pos].left_pad
            and all(getattr(layer, "left_pad", False) for layer in self.layers)
        )
        self.ln_f = nn.LayerNorm(cfg.width, bias=False)
        self.head = nn.Linear(cfg.width, tok.vocab_size, bias=False)
        if cfg.tie_embeddings:  # one (vocab, width) matrix reads tokens in and scores them out
            self.head.weight = self.tok_emb.weight
        self._init_weights()
        # model.aux_loss: a linear probe on the head's input regresses the auxiliary target (arith/aux_loss.py);
        # made and initialised after every other module, whose weights are then the same as without it
        self.aux_probe = None
        if str(getattr(cfg, "aux_loss", "none")) != "none":
            self.aux_probe = nn.Linear(cfg.width, 1)
            nn.init.normal_(self.aux_probe.weight, mean=0.0, std=0.02)
            nn.init.zeros_(self.aux_probe.bias)

    def _init_weights(self) -> None:
        """normal(0, 0.02) everywhere (GPT-2, Radford et al. 2019); the projections that write into the residual
        stream get 0.02 / sqrt(2 * layers * recurrences), GPT-2's depth scaling with the effective (unrolled)
        training depth, since every block application adds to the same stream; a position module with `keeps_init`
        (FIRE's MLP) keeps its own, and the position table starts as model.pos_table says (`AbsSlot.init_table`).
        Blocks with their own prescription (post-LN, SAS-P) apply it last, in `init_weights(depth)`.
        """
        std = 0.02
        out_std = std / math.sqrt(2 * self.cfg.layers * self.cfg.recurrences)
        own = {id(sub) for m in self.modules() if getattr(m, "keeps_init", False) for sub in m.modules()}
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and id(m) not in own:
                nn.init.normal_(m.weight, mean=0.0, std=std)
        self.abs_pos.init_table(self.cfg.pos_table, std)
        for layer in self.layers:
            for proj in layer.out_projections():
                nn.init.normal_(proj.weight, mean=0.0, std=out_std)
            if hasattr(layer, "init_weights"):
                layer.init_weights(self.cfg.layers * self.cfg.recurrences)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix counts once

    def embedding_max_abs(self) -> float:
        """Largest |w| in the token and position tables: sign-based optimizers (Lion, Tiger) push the rows of
        rare tokens by the full learning rate at every step, up to +-100 in Su's runs (Su 2023)."""
        tables = [m.weight for m in (self.tok_emb, *self.abs_pos.modules()) if isinstance(m, nn.Embedding)]
        return max(float(t.detach().abs().max()) for t in tables)

    def new_cache(self) -> DecoderCache:
        return DecoderCache()

    # ------------------------------------------------------------------ defaults that depend on the mode
    def resolve_k(self, k=None, batch: int = 1):
        """Position offset: as given (an int, or a tensor of one offset per example); else, for a scheme that takes
        one, a training draw (`training_offset`) in training and eval_k in eval mode; 0 (and no RNG) otherwise."""
        if k is not None:
            return k.reshape(-1, 1) if torch.is_tensor(k) and k.numel() > 1 else int(k)
        if not self.abs_pos.takes_offset:
            return 0
        return self.training_offset(batch) if self.training else self.eval_k

    def training_offset(self, batch: int):
        return self.abs_pos.training_offset(batch)

    def resolve_recurrences(self, recurrences: int | None = None) -> int:
        if recurrences is not None:
            if recurrences <= 0:
                raise ValueError(f"recurrences={recurrences} must be positive")
            return int(recurrences)
        if self.training or self.eval_recurrences is None:
            return self.recurrences
        return self.eval_recurrences

    # ------------------------------------------------------------------ forward
    def windows(
        self, ids: torch.Tensor, cache: DecoderCache | None, T: int, pad: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """(B, 1, T, S + T) bool: what the row window, the number window, the item window (and its digit window),
        the answer window, the prompt window, the hidden prompt digits and the left padding (`pad`, (B,): a real
        query sees no PAD, a PAD query the PADs before it) let each query see; None when all are off."""
        by_number = (  # masks that read digit indices
            self.row_window
            or self.number_window
            or self.item_window
            or self.item_digits
            or self.hide_prompt_digits
        )
        by_prompt = (  # masks that read where the prompt ends
            self.number_window
            or self.item_window
            or self.item_digits
            or self.hide_prompt_digits
            or self.answer_window
            or self.prompt_window
        )
        if not (by_number or by_prompt or pad is not None):
            return None
        tokens = ids if cache is None or cache.tokens is None else torch.cat([cache.tokens, ids], dim=1)
        masks = []  # each (B, 1, T, S + T); a query sees what every one of them lets it
        if by_number:  # (B, S + T), 0 for non-digits (and PADs)
            index = abacus_positions(is_digit(self.digit_lut, tokens))
        if self.row_window:
            masks.append(row_window_mask(index, T, self.row_window))
        if by_prompt:
            eq = (tokens == self.eq_id).long()  # where each token stands against '='
            seen = eq.cumsum(dim=1)  # (B, S + T): '=' at or before each token
            after_prompt = seen - eq > 0  # False up to and including the first '='
            in_prompt = seen == 0  # before '='
        if self.number_window:
            masks.append(number_window_mask(index, after_prompt, T, self.number_window))
        if self.item_window:
            masks.append(item_window_mask(index, in_prompt, T))
        if self.answer_window:
            masks.append(answer_window_mask(after_prompt, T, self.answer_window))
        if self.prompt_window:
            masks.append(prompt_window_mask(in_prompt, T, self.prompt_window))
        if self.item_digits:
            masks.append(item_digits_mask(index, in_prompt, T, self.item_digits))
        if self.hide_prompt_digits:
            masks.append(prompt_digits_hidden_mask(index, in_prompt, T))
        if pad is not None:
            t_k = tokens.shape[1]
            real = torch.arange(t_k, device=ids.device)[None] >= pad[:, None]  # (B, S + T)
            visible = real[:, None, :] | ~real[:, t_k - T :, None]  # (B, T, S + T)
            masks.append((visible & causal_mask(T, t_k, ids.device))[:, None])
        return functools.reduce(torch.logical_and, masks) if masks else None

    def embed(
        self, ids: torch.Tensor, k: int, history: torch.Tensor | None = None, pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token + absolute position embedding of `ids` (B, T); `history` (B, S): the tokens before them; `pad`
        (B,): the left PADs of each row."""
        tokens = ids if history is None else torch.cat([history, ids], dim=1)  # (B, S + T)
        new = tokens.shape[1] - ids.shape[1]
        pos = self.abs_pos.positions(tokens, k) if pad is None else self.abs_pos.positions(tokens, k, pad=pad)
        emb = self.tok_emb(ids) + self.abs_pos.embed(pos[:, new:])  # (B, T)
        if self.opener_emb is not None:
            none = self.tok_emb.num_embeddings
            emb = emb + self.opener_emb(openers(tokens, self.digit_lut, none, pad)[:, new:])
        # one scan of the row's numbers serves both features
        if self.length_emb is not None or self.value_emb is not None:
            length, top = number_features(
                tokens, self.digit_lut, self.eq_id, self.digit_value, self.value_digits
            )
            if self.length_relative:  # against the row's longest: needs the whole row, history included
                length = relative_lengths(length)
            length, top = length[:, new:, None], top[:, new:, None].to(emb.dtype)  # (B, T, 1) each
        if self.length_emb is not None:
            if self.length_offset:  # L + k where a length is read (k: an int, or (B, 1) per example)
                shift = k.reshape(-1, 1, 1) if torch.is_tensor(k) else k
                length = torch.where(length > 0, length + shift, length)
            length = length.to(emb.dtype)
            # model.value_in_length: L + 0.d1...dn, one quantity in the numbers' order whatever their lengths
            if self.value_in_length:
                length = length + top
            emb = emb + self.length_emb(self.length_code(length))
        if self.value_emb is not None:
            emb = emb + self.value_emb(top)
        return self.drop(emb)  # (B, T, width)

    def _call(self, B: int, R: int, k, cache: DecoderCache | None, start: int, pad):
        """forward's offset and left padding, checked against the cache: (k, pad)."""
        if pad is not None:
            if not self.pads_left:
                raise ValueError(
                    "left padding (pad) needs a model whose every part allows it (model.pads_left)"
                )
            if self.training:
                raise ValueError("left padding (pad) is for decoding: the model is in training mode")
            pad = torch.as_tensor(pad, dtype=torch.long, device=self.tok_emb.weight.device)
            if pad.shape != (B,):
                raise ValueError(f"pad must hold one count per row, shape ({B},), got {tuple(pad.shape)}")
        if cache is None:
            if start != 0:
                raise ValueError("start > 0 needs the cache that holds the earlier tokens")
            return self.resolve_k(k, B), pad
        if torch.is_tensor(k) and k.numel() > 1:
            raise ValueError("per-example offsets are for training: decode with one int k")
        if start != cache.length:
            raise ValueError(f"start={start} but the cache holds {cache.length} tokens")
        if cache.k is None:
            cache.k, cache.recurrences, cache.pad = self.resolve_k(k), R, pad
        elif (k is not None and int(k) != cache.k) or R != cache.recurrences:
            raise ValueError("k and recurrences must stay those of the cache's first call")
        elif pad is not None and pad is not cache.pad:  # the same tensor (no device sync to compare)
            raise ValueError("pad must stay that of the cache's first call")
        return cache.k, cache.pad

    def forward(
        self,
        ids: torch.Tensor,
        recurrences: int | None = None,
        no_grad_recurrences: int = 0,
        k: int | None = None,
        cache: DecoderCache | None = None,
        start: int = 0,
        pad: torch.Tensor | None = None,
        return_aux: bool = False,
        trim: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) -> logits (B, T, vocab) in float32; with return_aux (model.aux_loss set), also the probe's
        (B, T) float32 reading of the same hidden states.

        no_grad_recurrences: the first n block applications run without autograd (truncated backprop for the
        progressive loss); cache/start: incremental decoding, `ids` being the tokens at start..start+T-1 and
        `start` the number of tokens the cache already holds (k, recurrences and pad stay those of its first call).
        pad (B,) long: row b starts with pad[b] PAD tokens (left padding, for decoding prompts of different lengths
        together; `pads_left` models only): no real token sees them and every position counts from the row's
        first real token, so each row's logits are those of the row alone (up to float rounding).
        trim (B, A) long: return the logits at those positions of each row only, (B, A, vocab); the last block
        application computes its outputs there only (every token stays a key and a value), so a loss that reads
        no other logit (the answer's, `arith.step.answer_positions`) is the same for less work. No cache.
        """
        B, T = ids.shape
        R = self.resolve_recurrences(recurrences)
        k, pad = self._call(B, R, k, cache, start, pad)
        if not 0 <= no_grad_recurrences <= R:
            raise ValueError(f"no_grad_recurrences={no_grad_recurrences} must be in 0..{R}")
        if trim is not None and (cache is not None or trim.dim() != 2 or trim.shape[0] != B):
            raise ValueError(f"trim must be ({B}, A) positions, without a cache; got {tuple(trim.shape)}")

        if torch.is_tensor(k):  # per-example offsets, drawn on the host: an asynchronous copy, no host sync
            k = k.to(ids.device, non_blocking=True)
        emb = self.embed(ids, k, None if cache is None else cache.tokens, pad)  # (B, T, width)
        q_pos, k_pos = self.rel_positions(T, start, cache is not None, self.training, ids.device)
        if pad is not None:  # each row's own positions, counted from its first real token
            q_pos, k_pos = q_pos[None] - pad[:, None], k_pos[None] - pad[:, None]
        inputs = [layer.prepare(q_pos, k_pos) for layer in self.layers]  # reused by every recurrence
        allow = self.windows(ids, cache, T, pad)
        if allow is not None or self.attn_log_n:  # the windows, and model.attn_log_n's key counts
            log_n = log_key_counts(allow, start, T, ids.device) if self.attn_log_n else None
            inputs = [dataclasses.replace(inp, allow=allow, log_n=log_n) for inp in inputs]
        first = inputs[0]  # the first attention call of the pass (layer 0, recurrence 0)
        temp = None if self.training else self.attn_temperature
        if temp is not None:
            q_scale = temp.factors(start, T, ids.device, pad)  # (T,), (B, T) with pad: cached == uncached
            first = dataclasses.replace(first, q_scale=q_scale)
            if temp.where == "all":
                inputs = [dataclasses.replace(inp, q_scale=q_scale) for inp in inputs]

        h = emb
        for r in range(R):
            with torch.no_grad() if r < no_grad_recurrences else contextlib.nullcontext():
                for i, layer in enumerate(self.layers):
                    if self.inject and (r > 0 or i > 0) and (i == 0 or self.inject_every_layer):
                        h = h + emb  # never before the very first layer: h is the embedding there
                    inp = first if r == 0 and i == 0 else inputs[i]
                    if trim is not None and r == R - 1 and i == len(self.layers) - 1:  # the last application
                        h = (
                            layer(h, inp, keep=trim)
                            if getattr(layer, "trims", False)
                            else positions_of(layer(h, inp), trim)
                        )
                    else:
                        h = layer(h, inp, None if cache is None else cache.layer(r, i))
        if cache is not None:
            cache.tokens = ids if cache.tokens is None else torch.cat([cache.tokens, ids], dim=1)
        z = self.ln_f(h)
        if return_aux:
            if self.aux_probe is None:
                raise ValueError("return_aux needs a probe: set model.aux_loss")
            return self.head(z).float(), self.aux_probe(z).squeeze(-1).float()
        return self.head(z).float()
