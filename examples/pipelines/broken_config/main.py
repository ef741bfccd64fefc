"""Never runs: its pipeline.json has mistakes, which Fast-Flow lists instead of guessing."""

print("unreachable")
