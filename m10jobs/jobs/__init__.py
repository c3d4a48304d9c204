"""One module per flow: its declaration (JOB) and its pass.  Found by the registry."""
