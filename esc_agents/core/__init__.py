"""The foundation every other room stands on: errors, the dialogue types, and the files runs write
(fsynced JSONL logs, atomic JSON, run-folder locks, YAML, figures). Imports nothing above it."""
