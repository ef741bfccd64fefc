"""Prints one line per second, to watch a log arrive live (SLOW_SECONDS sets how long)."""

import os
import time

seconds = int(os.environ.get("SLOW_SECONDS", "20"))
for tick in range(1, seconds + 1):
    print(f"tick {tick}/{seconds}", flush=True)
    time.sleep(1)
print("done")
