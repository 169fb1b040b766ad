"""Command-line interface: `deepsloth <command>`; one module per command group."""
