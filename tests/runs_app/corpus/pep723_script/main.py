# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "humanize>=4",
# ]
# ///
import humanize

print("corpus ok", humanize.naturalsize(1_000_000))
