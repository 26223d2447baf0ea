"""Split-Fortunes: Debian's fortune files as a class-incremental text stream."""

from __future__ import annotations

import json

import polars as pl
import pytest

from clflow.streams.fortunes import CATEGORIES, class_order, main, read_entries


def fake_fortunes(root):
    root.mkdir()
    for name in CATEGORIES:
        entries = [f"{name} saying number {j}\n\t\t-- someone" for j in range(10)]
        entries.append("A saying filed under two categories")  # left out of both
        entries.append("x" * 1500)  # too long for the encoder: left out
        (root / name).write_text("\n%\n".join(entries) + "\n%\n")
        (root / f"{name}.dat").write_bytes(b"\0index")  # strfile's index is not a category
    return root


def test_writes_a_text_stream_with_a_fixed_class_order(tmp_path):
    source = fake_fortunes(tmp_path / "fortunes")
    main(["--out", str(tmp_path / "out"), "--source", str(source)])
    train = pl.read_parquet(tmp_path / "out" / "train.parquet")
    test = pl.read_parquet(tmp_path / "out" / "test.parquet")
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == list(CATEGORIES)
    assert train.height == 70 and test.height == 30  # 10 entries a class, 30 % held out
    both = pl.concat([train, test])
    assert both.filter(pl.col("y") == 3)["text"].str.starts_with("love").all()
    assert (both["experience"] == both["y"] // 2).all()
    assert not both["text"].str.contains("two categories").any()
    assert both["text"].str.len_chars().max() <= 1000


def test_another_class_order_relabels_the_same_documents(tmp_path):
    order = class_order(1)
    assert sorted(order) == sorted(CATEGORIES) and order != CATEGORIES
    source = fake_fortunes(tmp_path / "fortunes")
    main(["--out", str(tmp_path / "o"), "--source", str(source), "--order-seed", "1"])
    train = pl.read_parquet(tmp_path / "o" / "train.parquet")
    assert train.filter(pl.col("y") == 0)["text"].str.starts_with(order[0]).all()


def test_read_entries_splits_on_percent_lines(tmp_path):
    path = tmp_path / "f"
    path.write_bytes("one\n%\n\n%\ntwo\nlines\n%\ncaf\xe9".encode("latin-1"))
    assert read_entries(path) == ["one", "two\nlines", "café"]


def test_a_missing_category_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "out"), "--source", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "no such fortune file" in err
    assert not (tmp_path / "out").exists()
