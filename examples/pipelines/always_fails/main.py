"""Fails on purpose, so you can see how a failed run looks (and how retries behave)."""

import sys

print("Checking the input files...")
print("No input files found in /data/incoming", file=sys.stderr)
sys.exit(3)
