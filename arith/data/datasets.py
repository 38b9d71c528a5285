"""On-disk and streaming training data, and deterministic batches.

On disk (``build``): a Hugging Face ``DatasetDict(train, test)`` saved with ``save_to_disk`` in
``<root>/<name>/``, one column ``input_ids`` (variable-length token ids, no padding, stored as uint8 while the
vocabulary fits: Batches return int64), plus ``tokenizer.json`` and ``arith_data.json`` (what was built).
Rows are generated in chunks of ``CHUNK`` with ``numpy.random.default_rng([seed, split, chunk])`` and turned
into Arrow list arrays from flat values + offsets, so a build is deterministic for a seed and needs no Python
per row. test = round(test_frac * n_train) rows drawn like the training rows (train keeps the rest): it
measures in-distribution loss; held-out evaluation uses ``tasks.eval_cell``.
An exhaustive task (bitwise_or) stores every example once, shuffled, whatever n_train (the original kept 100
of 2,870 rows by mistake); its test split is a random sample of that set.

Batches: ``batch(step)`` depends only on (seed, step, rank, world), so resuming at a step replays exactly the
data a run would have seen. Rank r of `world` takes global rows r::world; each local batch is padded to its
own longest row. ``counted_batch(step)`` also gives the batch's useful (non-PAD) token count, from the row
lengths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from arith.data import tasks
from arith.data.tokenizer import ArithTokenizer
from arith.errors import DataError, require, write_error
from arith.files import umask_mode

FORMAT_VERSION = 1
META = "arith_data.json"
CHUNK = 1_000_000
_SHARD_BYTES = 500 << 20
_TRAIN, _TEST = 0, 1  # rng stream ids


def _task(cfg) -> str:
    return str(cfg.task)


_lens = tasks.train_lengths


def dataset_dir(cfg) -> Path:
    for key in ("root", "name"):
        value = str(getattr(cfg, key))
        require(
            "${" not in value,
            f"data.{key} is an unresolved interpolation {value!r}: compose the config "
            f"through Hydra or set data.{key}",
        )
    path = Path(cfg.root) / cfg.name
    legacy = _legacy_dir(cfg, path)
    return legacy if legacy is not None and not _complete(path) and _complete(legacy) else path


def _legacy_dir(cfg, path: Path) -> Path | None:
    """Where the default name put a dataset built with a null max_len_b before names stopped reading "None"
    (``addition_20xNone_...``, now ``addition_20x20_...``), so that an existing build is still found."""
    if cfg.max_len_b is not None:
        return None
    a = int(cfg.max_len)
    stem = f"{_task(cfg)}_{a}x{a}_"
    return (
        path.with_name(f"{_task(cfg)}_{a}xNone_" + path.name[len(stem) :])
        if path.name.startswith(stem)
        else None
    )


def _complete(path: Path) -> bool:
    return (path / META).is_file()


# ---------------------------------------------------------------- build


def _to_arrow(ex: tasks.Examples) -> pa.ListArray:
    """(N, T) padded matrix -> list array of the unpadded rows, without Python per row."""
    t = ex.ids.shape[1]
    flat = ex.ids[np.arange(t)[None, :] < ex.length[:, None]]  # row-major: rows one after another
    offsets = np.zeros(len(ex.length) + 1, dtype=np.int32)
    np.cumsum(ex.length, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def _store_dtype(tok: ArithTokenizer):
    return np.uint8 if tok.vocab_size <= 256 else np.int32


def _generate(cfg, tok, stream: int, n: int, bar, timings: dict) -> list[pa.ListArray]:
    max_a, max_b = _lens(cfg)
    chunks = []
    for c, lo in enumerate(range(0, n, CHUNK)):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, stream, c])
        ex = tasks.train_examples(
            tasks.task_for(cfg),
            tok,
            rng,
            min(CHUNK, n - lo),
            max_a,
            max_b,
            dtype=_store_dtype(tok),
            length_power=float(getattr(cfg, "length_power", 0.0)),
        )
        t1 = time.perf_counter()
        chunks.append(_to_arrow(ex))
        t2 = time.perf_counter()
        timings["generate"] = timings.get("generate", 0.0) + t1 - t0
        timings["arrow"] = timings.get("arrow", 0.0) + t2 - t1
        if bar is not None:
            bar.update(len(ex))
    return chunks


def _exhaustive_splits(spec, cfg, tok) -> tuple[list[pa.ListArray], list[pa.ListArray]]:
    ex = spec.every_example(tok, *_lens(cfg))
    ex = tasks.Examples(ex.ids.astype(_store_dtype(tok)), ex.prompt_len, ex.length)
    train_rows = np.random.default_rng([cfg.seed, _TRAIN]).permutation(len(ex))
    n_test = min(len(ex), max(1, round(cfg.test_frac * len(ex)))) if cfg.test_frac > 0 else 0
    test_rows = np.random.default_rng([cfg.seed, _TEST]).choice(len(ex), size=n_test, replace=False)

    def take(rows):
        return [_to_arrow(tasks.Examples(ex.ids[rows], ex.prompt_len[rows], ex.length[rows]))]

    return take(train_rows), take(test_rows)


def _dataset(chunks: list[pa.ListArray], tok, fingerprint: str):
    from datasets import Dataset
    from datasets.table import InMemoryTable

    if not chunks:  # an empty split still needs the column's type
        chunks = [pa.array([], type=pa.list_(pa.from_numpy_dtype(_store_dtype(tok))))]
    table = pa.Table.from_arrays([pa.chunked_array(chunks)], names=["input_ids"])
    # a given fingerprint spares `datasets` from hashing the whole table (seconds and a copy at 20M rows)
    return Dataset(InMemoryTable(table), fingerprint=fingerprint)


def build(cfg, progress: bool = True, timings: dict | None = None) -> Path:
    """Generate and save the dataset for `cfg` atomically; refuses to overwrite a complete one.

    `timings`, when given, receives seconds per stage (generate, arrow, save, total).
    """
    import datasets as hf

    t_start = time.perf_counter()
    timings = {} if timings is None else timings
    spec = tasks.get_task(_task(cfg))
    max_a, max_b = _lens(cfg)
    spec.validate_lengths(max_a, max_b)
    require(0 <= cfg.test_frac < 1, f"data.test_frac must be in [0, 1), got {cfg.test_frac}")
    require(cfg.n_train >= 1, f"data.n_train must be >= 1, got {cfg.n_train}")
    target = dataset_dir(cfg)
    if target.exists():
        state = "a complete dataset" if _complete(target) else "an incomplete dataset (remove it)"
        raise DataError(f"{target} already holds {state}; build() never overwrites: delete it to rebuild")
    tok = ArithTokenizer.build()
    meta, n_test = _meta(cfg, spec, tok, max_a, max_b)
    fingerprint = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    tmp = _temp_dir(target)
    bars = hf.is_progress_bar_enabled()
    try:
        train, test = _splits(cfg, spec, tok, n_test, target.name, progress, timings)
        _save_splits(tmp, train, test, tok, meta, fingerprint, progress, timings)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target):  # not a concurrent builder that finished first
                raise
    except OSError as e:  # a full disk, a size limit, permissions: nothing is left half-written
        raise write_error(e, target) from None
    finally:
        if bars:
            hf.enable_progress_bars()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    timings["total"] = time.perf_counter() - t_start
    return target


def _meta(cfg, spec, tok: ArithTokenizer, max_a: int, max_b: int) -> tuple[dict, int]:
    """(what a build records in META, the source of its fingerprint; the test split's size). Raises for a format
    the task lacks, or a test_frac that leaves no training rows."""
    meta = {
        "format": FORMAT_VERSION,
        "task": _task(cfg),
        "max_len": max_a,
        "max_len_b": max_b,
        "n_train": int(cfg.n_train),
        "test_frac": float(cfg.test_frac),
        "seed": int(cfg.seed),
        "dtype": np.dtype(_store_dtype(tok)).name,
        "chunk": CHUNK,
    }
    if getattr(cfg, "pad_operands", False):
        tasks.task_for(cfg)  # raises for a task without a padded format
        meta["pad_operands"] = True
    if str(getattr(cfg, "format", "direct")) != "direct":
        tasks.task_for(cfg)  # raises for a task without that format
        meta["answer_format"] = str(cfg.format)
    n_test = round(cfg.n_train * cfg.test_frac)
    if spec.exhaustive:
        meta["note"] = "exhaustive training set, shuffled; n_train ignored"
    else:
        require(
            n_test < cfg.n_train, f"data.test_frac {cfg.test_frac} leaves no training rows of {cfg.n_train}"
        )
    return meta, n_test


def _temp_dir(target: Path) -> Path:
    """A fresh folder beside `target` to build in, following the umask."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(tmp, umask_mode(dirs=True))  # mkdtemp makes 0700; a shared dataset follows the umask
    except OSError as e:
        raise write_error(e, target) from None
    return tmp


def _splits(cfg, spec, tok, n_test: int, name: str, progress: bool, timings: dict):
    """(train, test) Arrow chunks: every example shuffled for an exhaustive task, generated rows otherwise."""
    from tqdm.auto import tqdm

    if spec.exhaustive:
        return _exhaustive_splits(spec, cfg, tok)
    bar = tqdm(total=cfg.n_train, desc=f"data {name}", unit="ex") if progress else None
    train = _generate(cfg, tok, _TRAIN, cfg.n_train - n_test, bar, timings)
    test = _generate(cfg, tok, _TEST, n_test, bar, timings)
    if bar is not None:
        bar.close()
    return train, test


def _save_splits(tmp: Path, train, test, tok, meta: dict, fingerprint: str, progress: bool, timings: dict):
    """The DatasetDict, the tokenizer and META (with the row counts) saved into `tmp`."""
    import datasets as hf

    t0 = time.perf_counter()
    if not progress:
        hf.disable_progress_bars()
    dd = hf.DatasetDict(
        {k: _dataset(v, tok, f"{fingerprint}-{k}") for k, v in (("train", train), ("test", test))}
    )
    # explicit shard counts: an empty split (test_frac=0) must still get one shard to load back
    shards = {k: max(1, -(-v.data.nbytes // _SHARD_BYTES)) for k, v in dd.items()}
    dd.save_to_disk(str(tmp), num_shards=shards)
    tok.save(tmp)
    meta["rows"] = {"train": len(dd["train"]), "test": len(dd["test"])}
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    timings["save"] = time.perf_counter() - t0


def load(cfg):
    """(DatasetDict, tokenizer) for `cfg`; DataError if missing or built for another task or lengths."""
    from datasets import load_from_disk

    path = dataset_dir(cfg)
    if not _complete(path):
        raise DataError(
            f"no dataset at {path} (missing {META}): build it with ensure()/scripts/make_data.py "
            "or set data.streaming=true"
        )
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path / META} ({e}): delete {path} to rebuild it") from None
    max_a, max_b = _lens(cfg)
    want = {"task": _task(cfg), "max_len": max_a, "max_len_b": max_b}
    if getattr(cfg, "pad_operands", False):  # only then: datasets built before the key existed still match
        want["pad_operands"] = True
    want["answer_format"] = str(getattr(cfg, "format", "direct"))  # datasets without the key are direct
    got = {k: meta.get(k, "direct" if k == "answer_format" else None) for k in want}
    if got != want or meta.get("format") != FORMAT_VERSION:
        raise DataError(
            f"dataset at {path} was built for {got} (format {meta.get('format')}), config asks "
            f"{want} (format {FORMAT_VERSION}): wrong data.name or data.root?"
        )
    try:
        dd = load_from_disk(str(path))
    except (OSError, ValueError, pa.ArrowException) as e:  # a file truncated or garbled on disk
        raise DataError(
            f"the dataset at {path} is unreadable ({e}): delete it (rm -r {path}) to rebuild it"
        ) from None
    rows = meta.get("rows", {})
    for split in ("train", "test"):
        if split in rows and (split not in dd or len(dd[split]) != rows[split]):
            have = len(dd[split]) if split in dd else 0
            raise DataError(
                f"the dataset at {path} holds {have} {split} rows where {META} says {rows[split]}: "
                f"delete it (rm -r {path}) to rebuild it"
            )
    return dd, ArithTokenizer.load(path)


def ensure(cfg) -> Path:
    """The dataset's directory, building it first if missing (call on one rank, then synchronize)."""
    path = dataset_dir(cfg)
    return path if _complete(path) else build(cfg)


# ---------------------------------------------------------------- batches


def _pad(length: np.ndarray, values: np.ndarray, pad_id: int) -> torch.Tensor:
    """Flat row values + lengths -> (N, longest) int64 tensor padded with pad_id."""
    t = int(length.max()) if len(length) else 0
    out = np.full((len(length), t), pad_id, dtype=np.int64)
    out[np.arange(t)[None, :] < length[:, None]] = values
    return torch.from_numpy(out)


class Batches:
    """batch(step) -> (global_batch // world, T) int64 tensor, right-padded with PAD; pure in (seed, step).

    bucket = G > 1: the examples of steps gG .. gG + G - 1 are sorted by length and cut into G batches, taken
    in a random order of their own (Hugging Face's group_by_length, per group of G steps): the same examples,
    far less padding per batch.
    """

    def __init__(self, global_batch: int, seed: int, rank: int = 0, world: int = 1, bucket: int = 1):
        require(world >= 1 and 0 <= rank < world, f"rank {rank} is not in 0..world-1 (world {world})")
        require(
            global_batch >= 1 and global_batch % world == 0,
            f"train.batch_size {global_batch} must be a positive multiple of the world size {world}",
        )
        require(bucket >= 1, f"data.bucket={bucket} must be >= 1 (1 = off)")
        self.global_batch, self.seed, self.rank, self.world = global_batch, seed, rank, world
        self.local_batch = global_batch // world
        self.bucket, self.pad_id = bucket, 0
        self._group: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _global(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (global_batch, T) padded, length (global_batch,)) of one step, every rank's rows."""
        raise NotImplementedError

    def _bucketed(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        g, j = divmod(step, self.bucket)
        if self._group is None or self._group[0] != g:
            parts = [self._global(s) for s in range(g * self.bucket, (g + 1) * self.bucket)]
            width = max(ids.shape[1] for ids, _ in parts)
            ids = np.concatenate(
                [np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=self.pad_id) for x, _ in parts]
            )
            length = np.concatenate([n for _, n in parts])
            chunks = np.argsort(length, kind="stable").reshape(self.bucket, self.global_batch)
            order = np.random.default_rng([self.seed, g, 0xB0C]).permutation(self.bucket)
            self._group = (g, ids, length, chunks[order])
        _, ids, length, chunks = self._group
        return ids[chunks[j]], length[chunks[j]]

    def batch(self, step: int) -> torch.Tensor:
        return self.counted_batch(step)[0]

    def counted_batch(self, step: int) -> tuple[torch.Tensor, int]:
        """(batch(step), its useful tokens): the non-PAD tokens of this rank's rows, i.e. the sum of their
        example lengths (a row holds no PAD before its end), read from the host-side lengths at no cost."""
        ids, length = self._bucketed(step) if self.bucket > 1 else self._global(step)
        ids, length = ids[self.rank :: self.world], length[self.rank :: self.world]
        batch = torch.from_numpy(np.ascontiguousarray(ids[:, : int(length.max())], dtype=np.int64))
        return batch, int(length.sum())


class DiskBatches(Batches):
    """Epoch e visits the split in permutation(seed, e); step s takes global rows perm[s*B:(s+1)*B] (wrapping)."""

    def __init__(
        self,
        split_ds,
        tok: ArithTokenizer,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        bucket: int = 1,
    ):
        super().__init__(global_batch, seed, rank, world, bucket)
        self.ds = split_ds.with_format("arrow")
        self.n = len(split_ds)
        require(self.n > 0, "the dataset split is empty", DataError)
        self.pad_id = tok.pad_id
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def _global(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        pos = step * self.global_batch + np.arange(self.global_batch, dtype=np.int64)
        epoch, idx = np.divmod(pos, self.n)
        rows = np.empty_like(pos)
        for e in np.unique(epoch):
            sel = epoch == e
            rows[sel] = self._perm(int(e))[idx[sel]]
        col = self.ds[rows.tolist()].column("input_ids").combine_chunks()
        length = np.diff(np.asarray(col.offsets))
        return _pad(length, np.asarray(col.flatten()), self.pad_id).numpy(), length


class StreamBatches(Batches):
    """Generates the global batch of step s with default_rng([seed, s]) and keeps rows rank::world."""

    def __init__(self, cfg, tok: ArithTokenizer, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        super().__init__(global_batch, seed, rank, world, int(getattr(cfg, "bucket", 1)))
        self.task = tasks.task_for(cfg)
        self.max_a, self.max_b = _lens(cfg)
        self.task.validate_lengths(self.max_a, self.max_b)
        self.tok, self.pad_id = tok, tok.pad_id
        self.length_power = float(getattr(cfg, "length_power", 0.0))

    def _global(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        ex = tasks.train_examples(
            self.task,
            self.tok,
            rng,
            self.global_batch,
            self.max_a,
            self.max_b,
            length_power=self.length_power,
        )
        return ex.ids, ex.length


def make_batches(cfg, global_batch: int, seed: int, rank: int = 0, world: int = 1):
    """(Batches, tokenizer): streaming, or from disk (building the dataset if missing)."""
    if cfg.streaming:
        tok = ArithTokenizer.build()
        return StreamBatches(cfg, tok, global_batch, seed, rank, world), tok
    ensure(cfg)
    ds, tok = load(cfg)
    return DiskBatches(ds["train"], tok, global_batch, seed, rank, world, int(cfg.bucket)), tok
