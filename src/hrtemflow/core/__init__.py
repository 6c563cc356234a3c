"""Stage 0: what every stage shares and nothing depends on: errors, atomic files, the process
runtime, the id grammar and the registry of families and tasks. Imports nothing of hrtemflow."""
