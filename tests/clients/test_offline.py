"""Offline batch scoring (`python -m clients score`): straight from a real BentoML model store
(temp BENTOML_HOME, model imported by the real importer) or an MLflow folder, in chunks, with
exact predictions, bounded chunks, resumable output and one-line errors."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.client_models import (
    PROJECT_ROOT,
    PYTHON,
    diamonds_sample,
    native_predictions,
    read_output,
    run_clients,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, client_model: dict) -> dict:
    root = tmp_path_factory.mktemp("offline")
    shared = {**client_model, "env": dict(client_model["env"])}
    model_dir, env, tag = shared["model_dir"], shared["env"], shared["tag"]
    rows = diamonds_sample(2500)
    rows.to_parquet(root / "rows.parquet", row_group_size=700)  # groups cut across chunks
    rows.to_csv(root / "rows.csv", index=False)
    rows.to_json(root / "rows.jsonl", orient="records", lines=True, double_precision=15)
    return {
        "root": root,
        "model_dir": model_dir,
        "env": env,
        "tag": tag,
        "rows": rows,
        "expected": native_predictions(model_dir, rows),
    }


def test_score_from_the_bentoml_store_in_chunks_is_exact_and_keeps_ids(world, tmp_path):
    out = tmp_path / "scored.parquet"
    done = run_clients(
        "score",
        str(world["root"] / "rows.parquet"),
        str(out),
        "--model",
        world["tag"],
        "--chunk-size",
        "1000",
        "--id-column",
        "sku",
        env=world["env"],
    )
    assert done.returncode == 0, done.stderr
    assert "scored 2,500 rows" in done.stdout
    assert "(engine: numpy+numba-forest" in done.stdout  # the fast path the import checked
    assert "Traceback" not in done.stderr
    result = read_output(out)
    assert list(result.columns) == ["sku", "prediction"]
    assert result["sku"].tolist() == world["rows"]["sku"].tolist()
    # Bit for bit: the same Pipeline on the same doubles, one thread (as in the service).
    np.testing.assert_array_equal(result["prediction"].to_numpy(), world["expected"])
    assert not (tmp_path / "scored.parquet.partial").exists()


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (the model loads once for all such calls)."""
    from clients.__main__ import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("source", ["rows.csv", "rows.jsonl"])
def test_text_inputs_and_outputs_give_the_same_doubles(world, tmp_path, capsys, source):
    suffix = ".csv" if source.endswith(".csv") else ".jsonl"
    out = tmp_path / f"scored{suffix}"
    code, _, err = cli(
        capsys,
        "score",
        str(world["root"] / source),
        str(out),
        "--model-dir",
        str(world["model_dir"]),
        "--chunk-size",
        "600",
        "--no-progress",
    )
    assert code == 0, err
    result = read_output(out)
    assert result["id"].tolist() == list(range(2500))  # no id column: the row number
    np.testing.assert_array_equal(result["prediction"].to_numpy(), world["expected"])


def test_jsonl_on_stdin(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "scored.parquet"
    lines = (world["root"] / "rows.jsonl").read_text().splitlines()[:50]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n\n"))
    code, _, err = cli(
        capsys,
        "score",
        "-",
        str(out),
        "--model-dir",
        str(world["model_dir"]),
        "--id-column",
        "sku",
    )
    assert code == 0, err
    result = read_output(out)
    assert result["sku"].tolist() == world["rows"]["sku"][:50].tolist()
    np.testing.assert_array_equal(result["prediction"].to_numpy(), world["expected"][:50])


def test_a_killed_run_resumes_from_its_partial_output(world, tmp_path, capsys):
    big = tmp_path / "big.csv"
    rows = diamonds_sample(20_000, seed=7)
    rows.to_csv(big, index=False)
    out = tmp_path / "scored.csv"
    partial = tmp_path / "scored.csv.partial"
    args = [
        "score",
        str(big),
        str(out),
        "--model-dir",
        str(world["model_dir"]),
        "--id-column",
        "sku",
        "--chunk-size",
        "100",
        "--no-progress",
    ]
    process = subprocess.Popen(
        [PYTHON, "-m", "clients", *args],
        cwd=PROJECT_ROOT,
        env=world["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(list(partial.glob("part-*.parquet"))) < 5 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # no chance to clean up
    process.communicate(timeout=30)
    assert not out.exists()
    written = sum(pq.ParquetFile(p).metadata.num_rows for p in partial.glob("part-*.parquet"))
    assert 500 <= written < 20_000

    code, out_text, err = cli(capsys, *args)  # the rerun, in this process (faster)
    assert code == 0, err
    assert f"resumed after {written:,} rows" in out_text
    assert f"scored {20_000 - written:,} rows" in out_text
    result = read_output(out)
    assert result["sku"].tolist() == rows["sku"].tolist()  # none lost, none twice, in order
    np.testing.assert_array_equal(
        result["prediction"].to_numpy(), native_predictions(world["model_dir"], rows)
    )
    assert not partial.exists()


def test_chunks_are_bounded_whatever_the_row_groups(tmp_path):
    from clients.io import iter_chunks

    frame = pd.DataFrame({"a": np.arange(10_000, dtype=float), "b": ["x"] * 10_000})
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "f.parquet", row_group_size=3_333)
    frame.to_csv(tmp_path / "f.csv", index=False)
    for name in ("f.parquet", "f.csv"):
        for skip in (0, 4_000):
            chunks = list(iter_chunks(tmp_path / name, 1_024, skip=skip))
            sizes = [len(c) for c in chunks]
            assert max(sizes) == 1_024 and sum(sizes) == 10_000 - skip, (name, skip)
            assert all(s == 1_024 for s in sizes[:-1])
            got = pd.concat(chunks)
            assert got.index.tolist() == list(range(skip, 10_000))
            assert got["a"].tolist() == frame["a"][skip:].tolist()


def csv_with_blank_lines(frame: pd.DataFrame, path, every: int = 37) -> None:
    """``frame`` as CSV with blank lines after the header and between rows (pandas skips
    them: they are no rows)."""
    lines = frame.to_csv(index=False).splitlines()
    out = [lines[0], ""]
    for i, line in enumerate(lines[1:]):
        out.append(line)
        if i % every == 0:
            out.extend(["", "   "] if i % 2 else [""])
    path.write_text("\n".join(out) + "\n")


def test_csv_chunks_skip_parsed_rows_not_lines(tmp_path):
    """Blank lines and a quoted value holding line breaks are not rows: skipping counts rows,
    and every chunk's index is the row number."""
    from clients.io import iter_chunks

    frame = pd.DataFrame({"a": np.arange(3_000, dtype=float), "b": ["x"] * 3_000})
    frame.loc[[5, 1_500, 2_001], "b"] = "two\nlines"
    csv_with_blank_lines(frame, tmp_path / "f.csv")
    for skip in (0, 1, 700, 2_999):
        chunks = list(iter_chunks(tmp_path / "f.csv", 256, skip=skip))
        sizes = [len(c) for c in chunks]
        assert all(s == 256 for s in sizes[:-1]) and sum(sizes) == 3_000 - skip, skip
        got = pd.concat(chunks)
        assert got.index.tolist() == list(range(skip, 3_000))
        assert got["a"].tolist() == frame["a"][skip:].tolist()
        assert got["b"].tolist() == frame["b"][skip:].tolist()


@pytest.mark.parametrize(
    ("id_column", "by_tag"), [(None, False), ("sku", False), (None, True)], ids=str
)
def test_resuming_a_csv_with_blank_lines_writes_every_row_once(
    world, tmp_path, capsys, monkeypatch, id_column, by_tag
):
    """The partial output a killed `score` leaves (its first 450 rows, as whole parts), then
    the rerun: no row twice, no id shifted. By tag, the rows are numbered and the model has
    its fast path: the chunks are scored from their Arrow columns (clients.table_input)."""
    from clients.io import Manifest, PartWriter
    from clients.model import resolve

    rows = world["rows"]
    source = tmp_path / "blank.csv"
    csv_with_blank_lines(rows, source)
    out = tmp_path / "scored.csv"
    model = ["--model-dir", str(world["model_dir"])]
    ref = str(world["model_dir"])
    if by_tag:
        monkeypatch.setenv("BENTOML_HOME", world["env"]["BENTOML_HOME"])
        model, ref = ["--model", world["tag"]], resolve(world["tag"]).ref
    manifest = Manifest.for_job(source, ref, id_column)
    killed = PartWriter(out, manifest)
    ids = rows["sku"].to_numpy() if id_column else np.arange(len(rows))
    for start in (0, 150, 300):
        killed.write(ids[start : start + 150], world["expected"][start : start + 150])
    args = ["score", str(source), str(out), *model, "--chunk-size", "200", "--no-progress"]
    code, out_text, err = cli(capsys, *args, *(["--id-column", id_column] if id_column else []))
    assert code == 0, err
    assert "resumed after 450 rows" in out_text
    assert ("engine: numpy+numba-forest" in out_text) == by_tag
    result = read_output(out)
    assert result[id_column or "id"].tolist() == ids.tolist()
    np.testing.assert_array_equal(result["prediction"].to_numpy(), world["expected"])


def error_line(code: int, stderr: str) -> str:
    assert code != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_bad_input_is_one_error_line(world, tmp_path, capsys):
    model = ["--model-dir", str(world["model_dir"])]
    rows = str(world["root"] / "rows.parquet")
    world["rows"].drop(columns=["carat"]).head(5).to_csv(tmp_path / "lacks.csv", index=False)
    bad_number = world["rows"].head(5).astype({"depth": object})
    bad_number.loc[2, "depth"] = "deep"
    bad_number.to_csv(tmp_path / "text.csv", index=False)
    huge = world["rows"].head(5).astype({"depth": object})
    huge.loc[3, "depth"] = "1e300"  # a number the forest cannot take (beyond float32)
    huge.to_csv(tmp_path / "huge.csv", index=False)
    (tmp_path / "exists.parquet").write_bytes(b"")
    (tmp_path / "bad.jsonl").write_text('{"carat": 1}\nnot json\n')
    cases = {
        "lacks model column(s): carat": [
            "score",
            str(tmp_path / "lacks.csv"),
            str(tmp_path / "o1.csv"),
            *model,
        ],
        "'depth' must hold double values, got 'deep'": [
            "score",
            str(tmp_path / "text.csv"),
            str(tmp_path / "o2.csv"),
            *model,
        ],
        "column 'depth' in row 4: 1e+300 is outside the range": [  # 1-based data rows
            "score",
            str(tmp_path / "huge.csv"),
            str(tmp_path / "o11.csv"),
            *model,
        ],
        "does not exist": ["score", str(tmp_path / "nope.csv"), str(tmp_path / "o3.csv"), *model],
        "unknown file type": ["score", rows, str(tmp_path / "o4.xlsx"), *model],
        "already exists": ["score", rows, str(tmp_path / "exists.parquet"), *model],
        "not an MLflow model folder": [
            "score",
            rows,
            str(tmp_path / "o6.csv"),
            "--model-dir",
            str(tmp_path),
        ],
        "line 2: not JSON": [
            "score",
            str(tmp_path / "bad.jsonl"),
            str(tmp_path / "o7.csv"),
            *model,
        ],
        "must be at least 1": [
            "score",
            rows,
            str(tmp_path / "o8.csv"),
            *model,
            "--chunk-size",
            "0",
        ],
        "one of the arguments --model --model-dir is required": [
            "score",
            rows,
            str(tmp_path / "o9.csv"),
        ],
        "no id column 'ref'": [
            "score",
            rows,
            str(tmp_path / "o10.csv"),
            *model,
            "--id-column",
            "ref",
        ],
    }
    for expected, args in cases.items():
        try:
            code, _, err = cli(capsys, *args)
        except SystemExit as exc:  # argparse's errors exit
            code, err = exc.code, capsys.readouterr().err
        assert expected in error_line(code, err), (expected, err)
    # And as a real process (with its own BentoML home): one line, no traceback.
    args = ["score", rows, str(tmp_path / "o5.csv"), "--model", "nope:v1"]
    done = run_clients(*args, env=world["env"])
    assert "no model 'nope:v1'" in error_line(done.returncode, done.stderr)


def test_a_partial_output_of_another_job_is_not_mixed_in(world, tmp_path, capsys):
    out = tmp_path / "scored.parquet"
    partial = tmp_path / "scored.parquet.partial"
    partial.mkdir()
    (partial / "manifest.json").write_text(
        json.dumps({"input": "/elsewhere.csv", "input_size": 1, "model": "x", "id_column": None})
    )
    args = [
        "score",
        str(world["root"] / "rows.parquet"),
        str(out),
        "--model-dir",
        str(world["model_dir"]),
    ]
    assert "belongs to another job" in error_line(*cli(capsys, *args)[::2])
    code, _, err = cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert len(read_output(out)) == 2500


def test_csv_edge_cases_score_as_the_plain_file(world, tmp_path, capsys):
    """A UTF-8 byte order mark, CRLF line ends, quoted fields (commas, quotes, a line break),
    columns in another order and a column the model does not take: the same predictions as
    the plain CSV. An empty file is one error line; a header line alone scores no rows."""
    rows = world["rows"].head(40).copy()
    rows["note"] = 'a "quoted", text\nover two lines'
    shuffled = rows[["note", *reversed(list(world["rows"].columns))]]
    text = shuffled.to_csv(index=False, lineterminator="\r\n")
    (tmp_path / "odd.csv").write_bytes("\ufeff".encode() + text.encode())
    out = tmp_path / "odd-scored.csv"
    model = ["--model-dir", str(world["model_dir"])]
    code, _, err = cli(
        capsys, "score", str(tmp_path / "odd.csv"), str(out), *model, "--no-progress"
    )
    assert code == 0, err
    np.testing.assert_array_equal(read_output(out)["prediction"].to_numpy(), world["expected"][:40])

    (tmp_path / "empty.csv").write_bytes(b"")
    code, _, err = cli(
        capsys, "score", str(tmp_path / "empty.csv"), str(tmp_path / "e.csv"), *model
    )
    empty = f"error: {tmp_path / 'empty.csv'} is empty: a CSV file needs a header line"
    assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith(empty)
    assert not (tmp_path / "e.csv").exists()

    world["rows"].head(0).to_csv(tmp_path / "header.csv", index=False)
    code, out_text, err = cli(
        capsys, "score", str(tmp_path / "header.csv"), str(tmp_path / "h.csv"), *model
    )
    assert code == 0, err
    assert "scored 0 rows" in out_text
    assert (tmp_path / "h.csv").read_text().splitlines() == ["id,prediction"]


CUTS = "'Fair', 'Good', 'Very Good', 'Premium', 'Ideal'"
OUTSIDE = [
    ("cut", "Superb", f"column 'cut' in row 3: 'Superb' is not one of {CUTS}"),
    ("cut", "ideal", f"column 'cut' in row 3: 'ideal' is not one of {CUTS}"),
    ("carat", -5, "column 'carat' in row 3: -5 is out of the model's range (it takes at least"),
]


@pytest.mark.parametrize(("column", "value", "message"), OUTSIDE, ids=["unknown", "case", "carat"])
def test_a_value_outside_the_domain_is_one_error_line_and_leaves_nothing(
    world, tmp_path, capsys, monkeypatch, column, value, message
):
    """The file's third data row (row 3, as a person counts) holds a value outside the model's
    domain: one error line naming column, value and domain, from the BentoML model (its
    recorded domain) and from the MLflow folder (read from its Pipeline); no output, no
    partial folder. With TAGSERVE_UNKNOWN_CATEGORIES/OUT_OF_RANGE=accept: scored."""
    rows = world["rows"].head(10).astype({column: object})
    rows.loc[2, column] = value
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "scored.csv"
    for model in (["--model", world["tag"]], ["--model-dir", str(world["model_dir"])]):
        monkeypatch.setenv("BENTOML_HOME", world["env"]["BENTOML_HOME"])
        code, _, err = cli(capsys, "score", str(tmp_path / "rows.csv"), str(out), *model)
        assert message in error_line(code, err), err
        assert not out.exists() and not (tmp_path / "scored.csv.partial").exists()
    monkeypatch.setenv("TAGSERVE_UNKNOWN_CATEGORIES", "accept")
    monkeypatch.setenv("TAGSERVE_OUT_OF_RANGE", "accept")
    code, _, err = cli(
        capsys, "score", str(tmp_path / "rows.csv"), str(out), "--model", world["tag"]
    )
    assert code == 0, err
    expected = native_predictions(world["model_dir"], pd.read_csv(tmp_path / "rows.csv"))
    np.testing.assert_array_equal(read_output(out)["prediction"].to_numpy(), expected)


def test_a_file_with_none_of_the_model_columns_fails_as_one_with_some(
    world, tmp_path, capsys, monkeypatch
):
    """The scored output itself (id, prediction) given to score: the same error as a file
    lacking some of the columns, naming all of them; exit != 0, no output left."""
    monkeypatch.setenv("BENTOML_HOME", world["env"]["BENTOML_HOME"])
    scored = tmp_path / "scored.csv"
    rows = str(world["root"] / "rows.csv")
    code, _, err = cli(capsys, "score", rows, str(scored), "--model-dir", str(world["model_dir"]))
    assert code == 0, err
    for name in ("again.csv", "again.parquet"):
        source = scored if name.endswith(".csv") else tmp_path / "scored.parquet"
        if not source.exists():
            read_output(scored).to_parquet(source)
        code, _, err = cli(
            capsys, "score", str(source), str(tmp_path / name), "--model", world["tag"]
        )
        line = error_line(code, err)
        assert "input lacks model column(s): carat, depth, table, x, y, z, cut" in line, line
        assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.partial").exists()


def test_a_run_failing_after_written_parts_leaves_no_partial_folder(world, tmp_path, capsys):
    """Chunks of 100 rows: the bad row (row 251) is in the third, after two parts were
    written; the run fails and removes them. An interrupted run keeps its partial output
    (test_a_killed_run_resumes_from_its_partial_output)."""
    rows = world["rows"].head(400).astype({"depth": object})
    rows.loc[250, "depth"] = "deep"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "scored.parquet"
    args = ["score", str(tmp_path / "rows.csv"), str(out), "--model-dir", str(world["model_dir"])]
    code, _, err = cli(capsys, *args, "--chunk-size", "100")
    assert "'depth' must hold double values, got 'deep'" in error_line(code, err)
    assert not out.exists() and not (tmp_path / "scored.parquet.partial").exists()


def test_keep_input_writes_the_model_columns_beside_the_prediction(
    world, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("BENTOML_HOME", world["env"]["BENTOML_HOME"])
    out = tmp_path / "scored.csv"
    args = ["score", str(world["root"] / "rows.parquet"), str(out), "--model", world["tag"]]
    code, _, err = cli(capsys, *args, "--keep-input", "--id-column", "sku", "--chunk-size", "700")
    assert code == 0, err
    result = read_output(out)
    features = ["carat", "depth", "table", "x", "y", "z", "cut", "color", "clarity"]
    assert list(result.columns) == ["sku", *features, "prediction"]
    pd.testing.assert_frame_equal(
        result[features], world["rows"][features].reset_index(drop=True), check_dtype=False
    )
    np.testing.assert_array_equal(result["prediction"].to_numpy(), world["expected"])
