"""The smallest pipeline: it runs with `python main.py` here and in Fast-Flow alike."""

import platform

print(f"Hello from Fast-Flow on Python {platform.python_version()}!")
