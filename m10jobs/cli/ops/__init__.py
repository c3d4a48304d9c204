"""`m10 <group>` command groups, one module per area, each exposing COMMAND."""
