"""Demo scenes, one module per flow: ORDER, optional CONFIG (TOML), run(demo)."""
