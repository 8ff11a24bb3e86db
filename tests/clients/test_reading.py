"""Reading input files: Arrow's CSV reader gives the very frames pandas' reader gives (or hands
the file over to pandas), and the overlapped stages keep order, bounds and errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from clients import arrow_input
from clients.arrow_input import NotLikePandas, csv_chunks
from clients.errors import ClientError
from clients.io import _pandas_csv_chunks, iter_chunks
from clients.overlap import ordered_map
from tests.helpers.client_models import PROJECT_ROOT

DIAMONDS_TYPES = {
    "carat": "float64",
    "depth": "float64",
    "table": "float64",
    "x": "float64",
    "y": "float64",
    "z": "float64",
    "cut": "object",
    "color": "object",
    "clarity": "object",
}


def pandas_frames(path, chunk_size, dtypes, names=None, skip=0) -> list[pd.DataFrame]:
    """What the reader gave before Arrow: pandas' chunks, round-trip floats."""
    text = {c: t for c, t in dtypes.items() if t == "object"}
    return list(_pandas_csv_chunks(path, chunk_size, names, text, skip))


def assert_same_frames(got: list[pd.DataFrame], want: list[pd.DataFrame]) -> None:
    """Same chunks, index, columns, dtypes, and values: doubles bit for bit, missing as NaN."""
    assert [len(f) for f in got] == [len(f) for f in want]
    for a, b in zip(got, want, strict=True):
        assert a.index.equals(b.index)
        assert list(a.columns) == list(b.columns)
        for column in a.columns:
            x, y = a[column].to_numpy(), b[column].to_numpy()
            assert x.dtype == y.dtype, (column, x.dtype, y.dtype)
            if x.dtype.kind == "f":
                assert np.array_equal(np.isnan(x), np.isnan(y)), column
                present = ~np.isnan(x)
                assert np.array_equal(x[present].view(np.int64), y[present].view(np.int64)), column
            else:
                assert [type(v) for v in x] == [type(v) for v in y], column
                assert all(u == v or (u != u and v != v) for u, v in zip(x, y, strict=True))


def test_arrow_reads_the_diamonds_as_pandas_does(tmp_path):
    frame = pd.read_parquet(PROJECT_ROOT / "data" / "diamonds.parquet")
    frame.to_csv(tmp_path / "d.csv", index=False)
    names = [c for c in frame.columns if c in DIAMONDS_TYPES]
    got = list(csv_chunks(tmp_path / "d.csv", 10_000, names, DIAMONDS_TYPES, 0))
    assert_same_frames(got, pandas_frames(tmp_path / "d.csv", 10_000, DIAMONDS_TYPES, names))
    assert sum(map(len, got)) == len(frame)


def decimal_tokens(n: int, seed: int) -> list[str]:
    """Numbers as people and programs spell them: 1 to 25 digits, a point anywhere, an
    exponent, signs, round-trip reprs of random doubles, float32 values printed as doubles;
    all below 2**63 in magnitude (beyond it pandas reads integers otherwise: Arrow hands
    such a chunk over, another test)."""
    rng = np.random.default_rng(seed)
    tokens = []
    for _ in range(n):
        digits = "".join(map(str, rng.integers(0, 10, rng.integers(1, 26))))
        form = rng.integers(0, 5)
        if form == 0:
            token = digits.lstrip("0")[:18] or "0"  # integers within int64
        elif form == 1:
            point = rng.integers(0, min(len(digits), 18) + 1)
            token = digits[:point] + "." + digits[point:]
        elif form == 2:
            token = f"{digits[0]}.{digits[1:]}e{rng.integers(-330, 18)}"
        elif form == 3:
            token = repr(float(rng.standard_normal() * 10.0 ** rng.integers(-30, 17)))
        else:
            token = repr(float(np.float32(rng.random())))
        tokens.append(("-" if rng.random() < 0.3 and token[0] != "-" else "") + token)
    bits = rng.integers(0, 2**63, n // 4, dtype=np.int64).view(np.float64)
    return tokens + [repr(float(b)) for b in bits if np.isfinite(b) and abs(b) < 1e18]


def test_arrow_parses_every_double_as_pandas_round_trip(tmp_path):
    tokens = decimal_tokens(40_000, seed=3)
    path = tmp_path / "numbers.csv"
    path.write_text("n,label\n" + "".join(f"{t},x\n" for t in tokens))
    types = {"n": "float64", "label": "object"}
    got = list(csv_chunks(path, 7_000, ["n", "label"], types, 0))
    assert_same_frames(got, pandas_frames(path, 7_000, types, ["n", "label"]))
    exact = np.array([float(t) for t in tokens])
    values = pd.concat(got)["n"].to_numpy()
    assert np.array_equal(values.view(np.int64), exact.view(np.int64))


def test_arrow_reads_missing_words_quotes_bom_and_crlf_as_pandas(tmp_path):
    from pandas._libs.parsers import STR_NA_VALUES

    words = sorted(STR_NA_VALUES)
    texts = ['"a, ""b"""', '"two\r\nlines"', "plain", " padded "]
    flags = ["True", "false", "TRUE", ""]
    quoted = []
    for i in range(400):
        word = words[i % len(words)]
        number = word if i % 3 else "1.5"
        whole = word if i % 4 == 0 else str(i)
        text = word if i % 2 else texts[i % len(texts)]
        quoted.append(f"{i},{number},{whole},{text},{flags[i % 4]}")
    text = "\ufeffid,num,whole,text,flag\r\n" + "\r\n\r\n".join(quoted) + "\r\n"
    path = tmp_path / "odd.csv"
    path.write_bytes(text.encode())
    types = {"num": "float64", "whole": "int64", "text": "object", "flag": "bool"}
    names = ["id", "num", "whole", "text", "flag"]
    got = list(csv_chunks(path, 64, names, types, 0))
    want = pandas_frames(path, 64, types, names)
    assert_same_frames(got, want)
    assert pd.concat(got)["text"].isna().sum() > 100  # the words really were missing values


@pytest.mark.parametrize(
    ("case", "header", "line", "names"),
    [
        ("hex is text for pandas", "sku,n", "0x1f,1.5", ["sku", "n"]),
        ("a plus sign", "sku,n", "+5,1.5", ["sku", "n"]),
        ("NAN is text for pandas", "sku,n", "7,NAN", ["sku", "n"]),
        ("beyond double", "sku,n", "7,1e400", ["sku", "n"]),
        ("beyond int64", "sku,n", "7,9223372036854775808", ["sku", "n"]),
        ("a short row", "sku,n", "7", ["sku", "n"]),
    ],
)
def test_what_arrow_would_read_otherwise_goes_to_pandas(tmp_path, case, header, line, names):
    path = tmp_path / "f.csv"
    body = [f"{i},{i}.25" for i in range(300)]
    body[250] = line
    path.write_text(header + "\n" + "\n".join(body) + "\n")
    types = {"n": "float64"}
    got = list(iter_chunks(path, 100, columns=names, dtypes=types))
    assert_same_frames(got, pandas_frames(path, 100, types, names))
    if case != "hex is text for pandas":  # a hex file never reaches Arrow
        with pytest.raises(NotLikePandas):
            list(csv_chunks(path, 100, names, types, 0))


def test_a_later_block_arrow_cannot_read_hands_over_to_pandas_at_that_chunk(tmp_path, monkeypatch):
    """Types fixed by the first block, a fraction far below, a blank-looking line, a short
    row: Arrow gives the chunks before it, pandas the rest, the same rows and values."""
    monkeypatch.setattr(arrow_input, "BLOCK_BYTES", 1 << 12)
    lines = [f"{i},{i % 7},c{i % 5}" for i in range(3_000)]
    lines[2_100] = "2100,3.5,c0"  # whole numbers, then a fraction
    lines[2_500] = "   "  # no row for pandas
    lines[2_700] = "2700,1"  # a short row: pandas fills NaN
    path = tmp_path / "late.csv"
    path.write_text("sku,k,c\n" + "\n".join(lines) + "\n")
    types = {"k": "int64", "c": "object"}
    names = ["sku", "k", "c"]
    for skip in (0, 1_000, 2_600):
        got = list(iter_chunks(path, 256, columns=names, dtypes=types, skip=skip))
        assert_same_frames(got, pandas_frames(path, 256, types, names, skip))
        assert got[0].index[0] == skip
    early = []
    with pytest.raises(NotLikePandas):
        for chunk in csv_chunks(path, 256, names, types, 0):
            early.append(chunk)
    assert 0 < sum(map(len, early)) <= 2_100  # Arrow read the first blocks


def test_dates_go_to_pandas_and_text_ids_are_kept_as_written(tmp_path):
    """Arrow reads dates as timestamps (pandas as text): pandas reads. A text id column is
    read as text throughout: an id that looks like a number stays as written (pandas made
    the numbers of a chunk holding only such ids numbers, 007 -> 7, text in other chunks)."""
    dates = tmp_path / "dates.csv"
    dates.write_text("sku,n\n2020-01-02,1.5\n2020-01-03,2.5\n")
    assert_same_frames(list(iter_chunks(dates, 10)), pandas_frames(dates, 10, {}))
    with pytest.raises(NotLikePandas):
        list(csv_chunks(dates, 10, ["sku", "n"], {"n": "float64"}, 0))
    ids = tmp_path / "ids.csv"
    ids.write_text("sku,n\n" + "".join(f"{s},1.5\n" for s in ["a-1", "007", "+5", "8"]))
    got = pd.concat(iter_chunks(ids, 2, dtypes={"n": "float64"}))
    assert got["sku"].tolist() == ["a-1", "007", "+5", "8"]


def test_one_column_and_repeated_names_go_to_pandas(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("n\n1.5\n   \n2.5\n")
    assert_same_frames(list(iter_chunks(one, 10)), pandas_frames(one, 10, {}))
    assert len(pd.concat(iter_chunks(one, 10))) == 2  # the blank-looking line is no row
    twice = tmp_path / "twice.csv"
    twice.write_text("n,n,m\n1,2,x\n3,4,y\n")
    assert list(pd.concat(iter_chunks(twice, 10)).columns) == ["n", "n.1", "m"]
    assert pd.concat(iter_chunks(twice, 10))["n"].tolist() == [1, 3]


def test_bad_csv_values_are_the_errors_pandas_gave(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(ClientError, match="cannot read .* as CSV: Error tokenizing data"):
        list(iter_chunks(path, 10, dtypes={"a": "float64"}))


# --------------------------------------------------------------------------- overlap


def test_ordered_map_keeps_order_and_bounds_what_it_holds():
    held, most = 0, 0
    lock = threading.Lock()

    def items():
        nonlocal held, most
        for i in range(200):
            with lock:
                held += 1
                most = max(most, held)
            yield i

    def work(i: int) -> int:
        time.sleep(0.001 * (i % 3))  # later items often finish first
        return i * i

    got = []
    for result in ordered_map(work, items(), workers=3, ahead=5):
        got.append(result)
        with lock:
            held -= 1
    assert got == [i * i for i in range(200)]
    assert most <= 5 + 1  # ahead, and the one the reader is reading


def test_ordered_map_raises_the_first_error_after_the_results_before_it():
    def work(i: int) -> int:
        if i in (5, 7):
            raise ValueError(f"bad item {i}")
        return i

    got = []
    with pytest.raises(ValueError, match="bad item 5"):
        for result in ordered_map(work, iter(range(10)), workers=4, ahead=6):
            got.append(result)
    assert got == [0, 1, 2, 3, 4]

    def failing_read():
        yield from range(3)
        raise ClientError("cannot read row 3")

    got = []
    with pytest.raises(ClientError, match="row 3"):
        for result in ordered_map(lambda i: i, failing_read(), workers=2, ahead=2):
            got.append(result)
    assert got == [0, 1, 2]


def test_leaving_ordered_map_early_stops_its_reader():
    read = []
    closed = threading.Event()

    def items():
        try:
            for i in range(10_000):
                read.append(i)
                yield i
        finally:
            closed.set()

    scoring = ordered_map(lambda i: i, items(), workers=2, ahead=4)
    assert [next(scoring) for _ in range(3)] == [0, 1, 2]
    scoring.close()
    assert closed.wait(10)
    assert len(read) < 20
