import attrs
from tabulate import tabulate

print("corpus ok", tabulate([[attrs.__version__]]))
