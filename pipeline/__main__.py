"""`python -m pipeline [overrides]`: the Hydra entry point (sweeps with `-m`)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from inference.errors import TagserveError

CONFIG_DIR = Path(__file__).parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from pipeline.run import run

    try:
        run(cfg)
    except TagserveError as exc:
        # One readable line, no traceback: the error says what to fix.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def check_overrides(argv: list[str]) -> str | None:
    """Compose the config once to report a bad override in one line (None when fine).

    Hydra's own report spans several lines; sweeps (`-m`) are left to Hydra, since their
    comma lists are not valid single-run overrides.
    """
    if any(a in ("-m", "--multirun") for a in argv) or any(a.startswith("-") for a in argv):
        return None
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            compose("config", overrides=argv)
    except Exception as exc:  # Hydra raises several types, all with a readable message
        return " ".join(str(exc).split(" Config search path")[0].split())
    return None


if __name__ == "__main__":
    problem = check_overrides(sys.argv[1:])
    if problem:
        print(f"error: bad override: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
