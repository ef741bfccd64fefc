import duckdb
import numpy as np
import pandas as pd

frame = pd.DataFrame({"x": np.arange(5)})
total = duckdb.sql("select sum(x) as total from frame").fetchall()[0][0]
print("corpus ok", total)
