from tabulate import tabulate

print("corpus ok", tabulate([["no", "lock"]]))
