{{ config(materialized='table') }}
select order_id, customer_id, amount from raw_orders
{% if env('SHOP_KEEP_ORPHANS', '0') != '1' %}where customer_id is not null{% endif %}
