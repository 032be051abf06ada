"""The same job with local input and output, then with both in an S3 store on loopback.

    python benchmarks/objstore.py [--rows 5000] [--rounds 2] [--concurrency N]

Starts the emulator (its own process) and moto's S3 server (a thread here, 127.0.0.1), writes
the bench input, uploads it, and runs ``batchgen run`` in turns: local (``input.csv`` → ``out``)
then ``s3://bench/input.csv`` → ``s3://bench/out-N`` (a fresh output and mirror each round).
Reports rows/s over the emulator's window (first request to last answer, as run.py does) and
the wall time of the whole command (which adds the pull before and the last upload after), and
the s3:// to local ratios, best of the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import boto3
from harness import EmulatorProcess, batchgen_cmd, child_env, write_input, write_job
from moto.server import ThreadedMotoServer
from scenarios import measure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, default=None, help='pin it (default: the job\'s "auto")'
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batchgen-objstore-"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    store = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1",
        "BATCHGEN_CACHE_DIR": str(folder / "cache"),
    }
    os.environ.update(store)
    try:
        source = write_input(folder / "input.csv", args.rows)
        client = boto3.client("s3")
        client.create_bucket(Bucket="bench")
        client.upload_file(str(source), "bench", "input.csv")
        best: dict[str, tuple[float, float]] = {}
        with EmulatorProcess() as emulator:
            for r in range(args.rounds):
                for name in ("local", "s3"):
                    work = folder / f"{name}-{r}"
                    job = write_job(work, source, concurrency=args.concurrency)
                    if name == "s3":
                        text = job.read_text().replace(str(source), "s3://bench/input.csv")
                        job.write_text(text.replace('"out"', f'"s3://bench/out-{r}"'))
                    started = time.monotonic()
                    run = measure(emulator, batchgen_cmd(job, emulator.base_url), work, 900,
                                  child_env() | store)  # fmt: skip
                    wall = args.rows / (time.monotonic() - started)
                    rate, whole = best.get(name, (0.0, 0.0))
                    best[name] = (max(rate, run.rows_per_second), max(whole, wall))
                    print(
                        f"round {r + 1}, {name}: {run.rows_per_second:.0f} rows/s in the "
                        f"window, {wall:.0f} rows/s over the whole command",
                        flush=True,
                    )
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    (local, local_wall), (s3, s3_wall) = best["local"], best["s3"]
    print(
        f"{args.rows:,} rows, concurrency {args.concurrency or 'auto'}, best of {args.rounds}: "
        f"local {local:.0f} rows/s, s3:// {s3:.0f} rows/s (ratio {s3 / local:.3f}); whole command "
        f"{local_wall:.0f} vs {s3_wall:.0f} rows/s (ratio {s3_wall / local_wall:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
