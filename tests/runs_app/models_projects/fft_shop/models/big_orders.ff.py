import pandas as pd
from fastflowtransform import model


@model(name="big_orders", deps=["orders.ff"], materialized="table")
def build(orders: pd.DataFrame) -> pd.DataFrame:
    """A Python model: the orders of 20 or more."""
    return orders[orders["amount"] >= 20]
