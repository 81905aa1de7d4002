"""cropi_core — the algorithms of CROPI, pure and framework-free (no Prefect, no storage imports)."""
