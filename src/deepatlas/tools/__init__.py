"""Tools built on the public API: bench (the bars), compare (entries side by side)."""
