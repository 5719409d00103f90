"""Watching the served model: traffic for it (simulate) and drift of what it sees (monitor)."""
