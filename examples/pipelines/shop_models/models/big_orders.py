def model(dbt, session):
    """A Python model: the orders of 20 or more, computed by DuckDB's relational API."""
    dbt.config(materialized="table")
    return dbt.ref("stg_orders").filter("amount >= 20")
