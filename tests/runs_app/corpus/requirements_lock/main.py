import importlib.metadata

print("corpus ok", importlib.metadata.version("iniconfig"))
