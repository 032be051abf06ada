"""The output directory and everything written to it.

layout   the names of its files and folders, and its part files
reading  what it holds, from parts and journal segments alike; the done rule (OutputReader)
outdir   writing it with the lock held: prepare, compaction, starting over (OutputDir)
lock     one writer per output (.lock)
jobfile  job.json: the format and the fingerprint of the job that produced the output
runs     runs.jsonl: a record when each run starts and ends
journal  the write-ahead journal's segments
writer   where a run's outcomes go: journal frames as they arrive, parts on a schedule
output   the columns of results, failure records and the usage ledger
batches  the record of every Batch Mode chunk
(whole-file writes go through batchgen.atomic)
"""
