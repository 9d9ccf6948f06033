"""What became of the copies: counters and the summary line, the JSONL outcome log, the
primary-versus-shadow comparison and the report."""
