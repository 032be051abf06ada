"""The command line: click commands and the terminal/cron reporters. The only place click and
tqdm are imported; everything here calls the library and prints what it returns."""

from batchgen.cli.main import main

__all__ = ["main"]
