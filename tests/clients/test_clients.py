"""The clients against a real `bentoml serve` of the project's service on 127.0.0.1 (model
trained by the pipeline's functions, imported by the real importer into a temp BENTOML_HOME):
order kept, every row answered exactly once under load shedding (503s), across a server
restart and after a killed run; predictions equal to offline scoring, bit for bit."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from clients.service import MODEL_ENV
from tests.helpers.admission import HeldRequest, shed_count
from tests.helpers.client_models import (
    PROJECT_ROOT,
    PYTHON,
    diamonds_sample,
    native_predictions,
    read_output,
    run_clients,
    serving,
    start_server,
)
from tests.helpers.marks import starts_server

pytestmark = [pytest.mark.timeout(400), pytest.mark.server]
ROWS = 2500


@pytest.fixture(scope="module")
@starts_server
def world(tmp_path_factory: pytest.TempPathFactory, client_model: dict):
    root = tmp_path_factory.mktemp("clients")
    shared = {**client_model, "env": dict(client_model["env"])}
    model_dir, env, tag = shared["model_dir"], shared["env"], shared["tag"]
    env[MODEL_ENV] = tag
    rows = diamonds_sample(ROWS)
    rows.to_parquet(root / "rows.parquet")
    rows.to_csv(root / "rows.csv", index=False)
    server = start_server(env, root / "server.log")
    state = {
        "root": root,
        "model_dir": model_dir,
        "env": env,
        "tag": tag,
        "rows": rows,
        "expected": native_predictions(model_dir, rows),
        "server": server,
    }
    try:
        yield state
    finally:
        state["server"].stop()


def summary_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_single_request_from_json_and_from_flags(world):
    url = world["server"].url
    row = world["rows"].iloc[0]
    record = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != "sku"}
    done = run_clients("predict", json.dumps(record), "--url", url, env=world["env"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"prediction": world["expected"][0]}
    flags = [arg for k, v in record.items() for arg in ("-f", f"{k}={v!r}".replace("'", ""))]
    done = run_clients("predict", *flags, "--url", url, env=world["env"])
    assert json.loads(done.stdout) == {"prediction": world["expected"][0]}, done.stderr

    refused = run_clients("predict", '{"carat": "big"}', "--url", url, env=world["env"])
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: the service refused the record: HTTP 400")
    assert "carat" in line


def test_stream_keeps_order_and_equals_offline_scoring_and_predict_batch(world, tmp_path):
    out = tmp_path / "streamed.parquet"
    summary = summary_of(
        run_clients(
            "stream",
            str(world["root"] / "rows.csv"),
            str(out),
            "--url",
            world["server"].url,
            "--id-column",
            "sku",
            "-c",
            "8",
            "-b",
            "37",
            "--json",
            env=world["env"],
        )
    )
    assert summary["rows"] == ROWS and summary["complete"] and summary["errors"] == 0
    assert summary["requests"] == -(-ROWS // 37) + summary["retries"]
    streamed = read_output(out)
    assert streamed["sku"].tolist() == world["rows"]["sku"].tolist()

    # Offline scoring of the same model files, in chunks (here in-process; test_offline runs
    # it from the BentoML store as a command): the very same doubles.
    from clients.model import resolve
    from clients.offline import score_file

    offline_out = tmp_path / "offline.parquet"
    score_file(
        world["root"] / "rows.parquet",
        offline_out,
        resolve(model_dir=world["model_dir"]),
        chunk_size=1000,
        id_column="sku",
        progress=False,
    )
    offline = read_output(offline_out)
    np.testing.assert_array_equal(
        streamed["prediction"].to_numpy(), offline["prediction"].to_numpy()
    )
    np.testing.assert_array_equal(offline["prediction"].to_numpy(), world["expected"])

    # And what predict_batch answers directly (the records the client builds).
    from clients.service import ServiceInfo

    meta = httpx.get(f"{world['server'].url}/metadata", timeout=30).json()
    # The server answered on the fast path; offline scoring of the folder with sklearn.
    assert meta["engine"].startswith("numpy+numba-forest"), meta["fast_path"]
    records = ServiceInfo.from_metadata(meta).records(world["rows"].head(50))
    answer = httpx.post(f"{world['server'].url}/predict_batch", json=records, timeout=60)
    direct = [item["prediction"] for item in answer.json()]
    assert direct == offline["prediction"][:50].tolist()


def test_every_row_once_in_order_when_the_server_sheds_load(world, tmp_path):
    """A bulk budget of one request (``TAGSERVE_BULK_QUEUE=0``) held by a request whose body
    is not finished: every request of the stream is refused with 503 until it is released.
    No timing: the hold ends once the server has counted a refusal."""
    env = {**world["env"], "TAGSERVE_BULK_QUEUE": "0", "TAGSERVE_REQUEST_READ_SECONDS": "120"}
    rows = world["rows"].head(300)
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows.to_dict("records")))
    out = tmp_path / "shed.jsonl"
    record = rows.drop(columns="sku").head(1).to_dict("records")
    with serving(env, tmp_path / "shedding.log") as server:
        held = HeldRequest(server.url, "/predict_batch", record)
        try:
            stream = stream_process(
                world, str(source), str(out), "--url", server.url, "--id-column", "sku",
                "-c", "16", "-b", "4", "--retries", "40",
            )  # fmt: skip
            deadline = time.monotonic() + 120
            while shed_count(server.url, "/predict_batch") == 0:
                assert stream.poll() is None, stream.communicate()
                assert time.monotonic() < deadline, "the stream was never refused"
                time.sleep(0.05)
            assert held.finish()[0] == 200
        finally:
            held.close()
        stdout, stderr = stream.communicate(timeout=300)
    done = subprocess.CompletedProcess(stream.args, stream.returncode, stdout, stderr)
    summary = summary_of(done)
    assert summary["shed_503"] > 0, "the client saw no 503: the test proves nothing"
    assert summary["rows"] == 300 and summary["errors"] == 0
    result = read_output(out)
    assert result["sku"].tolist() == rows["sku"].tolist()  # none lost, none twice, in order
    np.testing.assert_array_equal(result["prediction"].to_numpy(), world["expected"][:300])


def parts_rows(partial: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in partial.glob("part-*.parquet"))


def wait_for_parts(partial: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(partial.glob("part-*.parquet")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no output part was committed"
        time.sleep(0.05)


def stream_process(world, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "clients", "stream", *args, "--no-progress", "--json"],
        cwd=PROJECT_ROOT,
        env=world["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_every_row_once_in_order_across_a_server_restart(world, tmp_path):
    big = diamonds_sample(10_000, seed=5)
    big.to_parquet(tmp_path / "big.parquet")
    out = tmp_path / "restart.csv"
    server = world["server"]
    port = int(server.url.rsplit(":", 1)[1])
    client = stream_process(
        world,
        str(tmp_path / "big.parquet"),
        str(out),
        "--url",
        server.url,
        "--id-column",
        "sku",
        "-c",
        "2",
        "-b",
        "8",
        "--retries",
        "30",
    )
    try:
        wait_for_parts(tmp_path / "restart.csv.partial", client)
        server.kill()  # a crash mid-run: requests in flight fail, new ones are refused
        assert client.poll() is None, "the client finished before the restart"
        time.sleep(1)
        world["server"] = start_server(world["env"], world["root"] / "server.log", port=port)
        stdout, stderr = client.communicate(timeout=300)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["retries"] > 0 and summary["errors"] == 0 and summary["rows"] == 10_000
    result = read_output(out)
    assert result["sku"].tolist() == big["sku"].tolist()
    np.testing.assert_array_equal(
        result["prediction"].to_numpy(), native_predictions(world["model_dir"], big)
    )


def test_a_killed_stream_resumes_from_its_partial_output(world, tmp_path):
    big = diamonds_sample(8_000, seed=9)
    big.to_csv(tmp_path / "big.csv", index=False)
    out = tmp_path / "resumed.parquet"
    partial = tmp_path / "resumed.parquet.partial"
    args = [
        str(tmp_path / "big.csv"),
        str(out),
        "--url",
        world["server"].url,
        "--id-column",
        "sku",
        "-c",
        "2",
        "-b",
        "10",
    ]
    client = stream_process(world, *args)
    try:
        wait_for_parts(partial, client)
    finally:
        client.send_signal(signal.SIGKILL)  # no chance to clean up
        client.communicate(timeout=30)
    done_before = parts_rows(partial)
    assert 0 < done_before < 8_000 and not out.exists()

    summary = summary_of(run_clients("stream", *args, "--json", env=world["env"]))
    assert summary["resumed_from"] == done_before
    assert summary["rows"] == 8_000 - done_before
    result = read_output(out)
    assert result["sku"].tolist() == big["sku"].tolist()  # none lost, none twice, in order
    np.testing.assert_array_equal(
        result["prediction"].to_numpy(), native_predictions(world["model_dir"], big)
    )


def test_stream_errors_are_one_line(world, tmp_path):
    url = world["server"].url
    world["rows"].drop(columns=["cut"]).head(5).to_csv(tmp_path / "lacks.csv", index=False)
    outside = world["rows"].head(5).copy()
    outside.loc[2, "cut"] = "Superb"  # the file's third data row: row 3
    outside.to_csv(tmp_path / "outside.csv", index=False)
    negative = world["rows"].head(5).copy()
    negative.loc[1, "carat"] = -5
    negative.to_csv(tmp_path / "negative.csv", index=False)
    world["rows"].head(5)[["sku"]].to_csv(tmp_path / "none.csv", index=False)
    cases = {
        "column 'cut' in row 3: 'Superb' is not one of 'Fair', 'Good', 'Very Good', 'Premium', "
        "'Ideal'": [str(tmp_path / "outside.csv"), str(tmp_path / "e.csv"), "--url", url],
        "column 'carat' in row 2: -5 is out of the model's range (it takes at least 0.1 and at "
        "most 6)": [str(tmp_path / "negative.csv"), str(tmp_path / "f.csv"), "--url", url],
        "lacks model column(s): carat, depth": [
            str(tmp_path / "none.csv"),
            str(tmp_path / "g.csv"),
            "--url",
            url,
        ],
        "lacks model column(s): cut": [
            str(tmp_path / "lacks.csv"),
            str(tmp_path / "a.csv"),
            "--url",
            url,
        ],
        "cannot reach http://127.0.0.1:9": [
            str(world["root"] / "rows.csv"),
            str(tmp_path / "b.csv"),
            "--url",
            "http://127.0.0.1:9",
            "--retries",
            "1",
        ],
        "bad --url": [str(world["root"] / "rows.csv"), str(tmp_path / "c.csv"), "--url", "ftp://x"],
        "more than the service takes": [
            str(world["root"] / "rows.csv"),
            str(tmp_path / "d.csv"),
            "--url",
            url,
            "-b",
            "100000",
        ],
    }
    for expected, args in cases.items():
        done = run_clients("stream", *args, "--no-progress", env=world["env"])
        assert done.returncode == 1, (expected, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert expected in lines[0], (expected, lines[0])
        assert not Path(args[1]).exists()
        if "cannot reach" not in expected:  # the input's fault: no partial output left
            assert not Path(args[1] + ".partial").exists(), expected
