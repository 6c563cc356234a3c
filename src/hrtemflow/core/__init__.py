"""Stage 0: what every stage shares and nothing depends on: errors, atomic files, the process
runtime, the id grammar, the registry of families and tasks, and the calibration error every stage and study
reports (`calibration`). Imports nothing of hrtemflow."""
