"""On-disk datasets (build / load / ensure) and deterministic, rank-sharded batches."""

import json

import pytest
import torch

from arith.data import datasets as DS
from arith.data import tasks as T
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError, DataError
from arith.schema import DataConfig, Task


def _cfg(tmp_path, name="add", **kw):
    base = dict(
        task=Task.addition, max_len=5, n_train=600, test_frac=0.05, seed=0, root=str(tmp_path), name=name
    )
    base.update(kw)
    return DataConfig(**base)


def _built(cfg):
    DS.build(cfg, progress=False)
    return DS.load(cfg)


def _rows(ds):
    return ds["input_ids"]


def _same_up_to_padding(x: torch.Tensor, y: torch.Tensor, pad: int) -> bool:
    t = max(x.shape[1], y.shape[1])
    xp = torch.nn.functional.pad(x, (0, t - x.shape[1]), value=pad)
    yp = torch.nn.functional.pad(y, (0, t - y.shape[1]), value=pad)
    return torch.equal(xp, yp)


def test_build_load_round_trip(tmp_path):
    cfg = _cfg(tmp_path)
    path = DS.build(cfg, progress=False)
    assert path == tmp_path / "add" and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    ds, tok = DS.load(cfg)
    assert (len(ds["train"]), len(ds["test"])) == (570, 30)
    meta = json.loads((path / DS.META).read_text())
    assert meta["task"] == "addition" and (meta["max_len"], meta["max_len_b"]) == (5, 5)
    assert meta["rows"] == {"train": 570, "test": 30}
    spec = T.TASKS["addition"]
    for split in ("train", "test"):
        for row in _rows(ds[split]):
            assert row[-1] == tok.eos_id and tok.pad_id not in row
            assert spec.check(tok.decode(row))
    assert DS.ensure(cfg) == path  # present: not rebuilt
    with pytest.raises(DataError, match="never overwrites"):
        DS.build(cfg, progress=False)


def test_build_is_deterministic(tmp_path):
    a, b, c = _built(_cfg(tmp_path, "a")), _built(_cfg(tmp_path, "b")), _built(_cfg(tmp_path, "c", seed=1))
    for split in ("train", "test"):
        assert _rows(a[0][split]) == _rows(b[0][split])
        assert _rows(a[0][split]) != _rows(c[0][split])


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no dataset at"):
        DS.load(_cfg(tmp_path, "missing"))
    DS.build(_cfg(tmp_path, "x"), progress=False)
    with pytest.raises(DataError, match="multiplication"):
        DS.load(_cfg(tmp_path, "x", task=Task.multiplication))
    with pytest.raises(DataError, match="max_len"):
        DS.load(_cfg(tmp_path, "x", max_len_b=6))
    with pytest.raises(ConfigError, match="interpolation"):
        DS.dataset_dir(DataConfig())


def test_build_sorting_and_or(tmp_path):
    cfg = _cfg(tmp_path, "sort", task=Task.sorting, max_len=3, max_len_b=4, n_train=200)
    ds, tok = _built(cfg)
    assert all(T.TASKS["sorting"].check(tok.decode(r)) for r in _rows(ds["train"]))
    cfg = _cfg(tmp_path, "or", task=Task.bitwise_or, max_len=6, n_train=10)
    ds, tok = _built(cfg)
    exhaustive = {tok.decode(r) for r in T.exhaustive_or(tok, 6, 6).ids}
    train = [tok.decode(r) for r in _rows(ds["train"])]
    assert len(train) == len(exhaustive) and set(train) == exhaustive  # n_train ignored: exhaustive once
    assert set(tok.decode(r) for r in _rows(ds["test"])) <= exhaustive


def test_disk_batches(tmp_path):
    cfg = _cfg(tmp_path, n_train=105, test_frac=0.0)
    batches, tok = DS.make_batches(cfg, global_batch=10, seed=7)  # builds on demand
    assert isinstance(batches, DS.DiskBatches)
    x = batches.batch(3)
    assert x.dtype == torch.int64 and x.shape[0] == 10 and (x == tok.eos_id).sum() == 10
    assert torch.equal(x, DS.make_batches(cfg, 10, seed=7)[0].batch(3))
    assert not torch.equal(x, batches.batch(4))
    # one epoch visits every row once; step 10 wraps into the next epoch
    ds, _ = DS.load(cfg)
    seen = [tok.decode(r) for s in range(11) for r in batches.batch(s)][:105]
    assert sorted(seen) == sorted(tok.decode(r) for r in _rows(ds["train"]))
    assert batches.batch(10).shape[0] == 10 and batches.batch(1000).shape[0] == 10
    for step in (0, 10):
        full = batches.batch(step)
        r0 = DS.DiskBatches(ds["train"], tok, 10, seed=7, rank=0, world=2).batch(step)
        r1 = DS.DiskBatches(ds["train"], tok, 10, seed=7, rank=1, world=2).batch(step)
        assert _same_up_to_padding(full[0::2], r0, tok.pad_id) and _same_up_to_padding(
            full[1::2], r1, tok.pad_id
        )
        assert (r0[:, -1] != tok.pad_id).any() and (r1[:, -1] != tok.pad_id).any()  # padded to own longest
    with pytest.raises(ConfigError, match="multiple of the world size"):
        DS.DiskBatches(ds["train"], tok, 10, seed=7, rank=0, world=3)


@pytest.mark.parametrize("task", ["addition", "sorting", "bitwise_or"])
def test_stream_batches(tmp_path, task):
    cfg = _cfg(tmp_path, task=Task(task), streaming=True, max_len=4)
    batches, tok = DS.make_batches(cfg, global_batch=8, seed=1)
    assert isinstance(batches, DS.StreamBatches) and not any(tmp_path.iterdir())
    x = batches.batch(5)
    assert torch.equal(x, DS.make_batches(cfg, 8, seed=1)[0].batch(5)) and not torch.equal(
        x, batches.batch(6)
    )
    assert all(T.TASKS[task].check(tok.decode(r)) for r in x)
    r0 = DS.StreamBatches(cfg, tok, 8, seed=1, rank=0, world=2).batch(5)
    r1 = DS.StreamBatches(cfg, tok, 8, seed=1, rank=1, world=2).batch(5)
    assert r0.shape[0] == r1.shape[0] == 4
    assert _same_up_to_padding(x[0::2], r0, tok.pad_id) and _same_up_to_padding(x[1::2], r1, tok.pad_id)
    with pytest.raises(ConfigError):
        DS.make_batches(cfg, global_batch=9, seed=1, world=2)


@pytest.mark.parametrize(
    "task, fmt, bucket",
    [
        ("addition", "direct", 1),
        ("sorting", "direct", 1),
        ("sorting", "label_last", 2),
        ("sorting", "values", 2),
        ("sorting", "successor", 2),
        ("subtraction", "scratchpad", 3),
    ],
)
def test_counted_batch_counts_the_non_pad_tokens(tmp_path, task, fmt, bucket):
    """counted_batch's useful tokens (read from the row lengths) == the non-PAD positions of its batch, for every
    rank and with bucketing; its batch is batch(step)'s."""
    cfg = _cfg(tmp_path, task=Task(task), streaming=True, max_len=4, format=fmt, bucket=bucket)
    padded = 0
    for world in (1, 2):
        for rank in range(world):
            batches = DS.StreamBatches(cfg, ArithTokenizer.build(), 8, seed=1, rank=rank, world=world)
            for step in range(4):
                x, useful = batches.counted_batch(step)
                assert torch.equal(x, batches.batch(step))
                assert useful == int((x != batches.pad_id).sum()) <= x.numel()
                padded += useful < x.numel()
    assert padded, "no batch had padding: the test would not tell useful from padded tokens"


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(T, "train_examples", boom)
    with pytest.raises(RuntimeError, match="boom"):
        DS.build(_cfg(tmp_path), progress=False)
    assert not any(tmp_path.iterdir())


def test_default_name_has_no_none_and_an_old_build_is_still_found(compose, tmp_path):
    over = [f"data.root={tmp_path}", "data.max_len=4", "data.n_train=300", "data.max_len_b=null"]
    cfg = compose(over).data
    assert cfg.name == "addition_4x4_n300_s0"
    assert compose([*over[:-1], "data.max_len_b=6"]).data.name == "addition_4x6_n300_s0"
    old = DataConfig(
        task=Task.addition, max_len=4, n_train=300, root=str(tmp_path), name="addition_4xNone_n300_s0"
    )
    DS.build(old, progress=False)  # where the default name put it before
    assert DS.dataset_dir(cfg) == tmp_path / "addition_4xNone_n300_s0"
    assert DS.ensure(cfg) == tmp_path / "addition_4xNone_n300_s0", "found, not built again"
    assert len(DS.load(cfg)[0]["train"]) == 297
    assert sorted(p.name for p in tmp_path.iterdir()) == ["addition_4xNone_n300_s0"]
