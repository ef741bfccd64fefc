{{ config(materialized='table') }}
select customer_id, name from raw_customers
