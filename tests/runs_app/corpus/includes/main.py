import six

print("corpus ok", six.__version__)
