"""Config checking: constraints in type annotations, signatures read from source, the checks derived from them (no "
"torch)."""
