"""Backend implementations, each imported only when it is asked for."""
