{{ config(materialized='table') }}
select c.customer_id, c.name, count(*) as orders, sum(o.amount) as revenue
from {{ ref('customers.ff') }} c join {{ ref('orders.ff') }} o on o.customer_id = c.customer_id
group by c.customer_id, c.name
