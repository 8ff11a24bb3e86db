"""Step 1, download: fetch the raw data from a URL or a path and log it as `raw_data`."""

from __future__ import annotations

import base64
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from artifacts.store import file_sha256
from artifacts.urls import redact_url
from pipeline.errors import PipelineError
from pipeline.tracking import PROJECT_ROOT, StepContext

READERS = {"csv": pd.read_csv, "parquet": pd.read_parquet}


def data_format(name: str, declared: str = "auto") -> str:
    """The file format: ``declared`` unless it is ``auto``, else from the file extension.

    Args:
        name: a file name or URL.
        declared: ``auto``, ``csv`` or ``parquet``.

    Returns:
        ``csv`` or ``parquet``.
    """
    if declared != "auto":
        if declared not in READERS:
            raise PipelineError(f"data.format must be auto, csv or parquet, not {declared!r}")
        return declared
    suffix = Path(urllib.parse.urlparse(name).path).suffix.lower()
    formats = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
    if suffix not in formats:
        raise PipelineError(
            f"cannot tell the format of {redact_url(name)!r}: set data.format=csv|parquet"
        )
    return formats[suffix]


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    """Read a CSV or Parquet file, turning parser errors into one readable line."""
    try:
        return READERS[fmt](path)
    except Exception as exc:  # pandas/pyarrow raise many types for a corrupt file
        raise PipelineError(f"cannot read {path.name} as {fmt}: {exc}") from exc


def resolve_local(url: str) -> Path:
    """A local path for ``file://`` URLs and plain paths (cwd first, then the project root)."""
    parsed = urllib.parse.urlparse(url)
    path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url)
    path = path.expanduser()
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise PipelineError(f"data file not found: {redact_url(url)}")
    return path


def http_request(url: str) -> urllib.request.Request:
    """A request for ``url``; ``user:password@`` in it becomes HTTP Basic authentication
    (urllib would take it for part of the host name)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    host = parts.netloc.rpartition("@")[2]
    bare = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.request.Request(bare, headers={"Authorization": f"Basic {token}"})


def fetch(url: str, dest: Path, timeout: float = 30.0) -> Path:
    """Copy the data at ``url`` to the file ``dest``, with a progress bar for downloads.

    Args:
        url: ``http(s)://``, ``file://`` or a path.
        dest: the file to write.
        timeout: seconds to wait for a network answer.

    Returns:
        ``dest``.
    """
    scheme = urllib.parse.urlparse(url).scheme
    shown = redact_url(url)  # what messages say: never the credentials
    if scheme in ("http", "https"):
        try:
            with (
                urllib.request.urlopen(http_request(url), timeout=timeout) as response,
                open(dest, "wb") as f,
            ):
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total, unit="B", unit_scale=True, desc="download", leave=False
                ) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        f.write(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as exc:
            raise PipelineError(f"cannot download {shown}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PipelineError(f"cannot download {shown}: {reason}") from None
    elif scheme in ("", "file"):
        shutil.copyfile(resolve_local(url), dest)
    else:
        raise PipelineError(
            f"unsupported URL scheme {scheme!r} in {shown}: use http(s), file or a path"
        )
    return dest


def run(ctx: StepContext) -> None:
    cfg = ctx.cfg.data
    fmt = data_format(cfg.url, cfg.format)
    dest = ctx.workdir / f"raw_data.{fmt}"
    fetch(cfg.url, dest)
    frame = read_table(dest, fmt)
    shown = redact_url(cfg.url)  # stored and printed: never the credentials
    if cfg.target not in frame.columns:
        raise PipelineError(f"data.target column {cfg.target!r} is not in {shown}")
    metadata = {
        "url": shown,
        "sha256": file_sha256(dest),
        "rows": len(frame),
        "columns": list(frame.columns),
        "format": fmt,
    }
    artifact = ctx.log_artifact(dest, "raw_data", "raw_data", metadata)
    print(f"download: {len(frame)} rows from {shown} -> {artifact.qualified_name}")
