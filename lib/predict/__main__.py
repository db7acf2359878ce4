"""`python -m lib.predict ...`, or `python path/to/lib/predict ...` from any working directory (lib.predict.command)."""
import sys
from pathlib import Path

if not __package__:  # run as a folder: import lib as a package, and keep lib/predict's modules from shadowing others
    sys.path[0] = str(Path(__file__).resolve().parent.parent.parent)

from lib.core.cli import run_cli  # noqa: E402
from lib.predict.command import main  # noqa: E402

run_cli(main, "predict")
