{{ config(
    materialized='incremental',
    description='Companies and B2B customers with a positive credit limit.',
    push_to_group_uid='segment-b2b-credit-customers',
    push_group_name='B2B credit customers (warehouse)',
    push_mode='mirror',
    max_remove_fraction=0.2,
    adopt_existing='add_only'
) }}

select
    tenant_uid,
    customer_uid
from {{ ref('stg_customers') }} as customers
where customer_type in ('COMPANY', 'B2B')
  and credit_limit > 0
