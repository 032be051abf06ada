"""The command line: click commands and the terminal/cron reporters. The only place click is
imported (tqdm also draws the library's notebook bar, in batchgen.run.notebook); everything here
calls the library and prints what it returns."""

from batchgen.cli.main import main

__all__ = ["main"]
