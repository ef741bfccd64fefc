"""Uses a third-party package from requirements.txt (installed by uv from the shared cache)."""

import requests

print(f"requests {requests.__version__} is installed")
session = requests.Session()
print(f"a session sends User-Agent: {session.headers['User-Agent']}")
