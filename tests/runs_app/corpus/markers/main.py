import importlib.util

import six

assert importlib.util.find_spec("tomli") is None
print("corpus ok", six.__version__)
