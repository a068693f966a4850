"""The D_r file every stage reads: one JSON line per candidate reply and its simulated future."""

RECORDS = "records.jsonl"
