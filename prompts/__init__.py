"""Prompt files, one per prompt, grouped by role. Users edit these or pass their own file's path."""
