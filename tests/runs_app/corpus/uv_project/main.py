import importlib.util

from tabulate import tabulate

assert importlib.util.find_spec("pytest") is None  # the dev group is left out
print("corpus ok", tabulate([["uv", "project"]]))
