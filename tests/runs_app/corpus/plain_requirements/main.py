import requests

print("corpus ok", requests.__version__)
