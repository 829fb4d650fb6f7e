{{ config(
    materialized='incremental',
    description='Customers whose credit balance is above 80% of their (positive) credit limit.',
    push_to_group_uid='segment-credit-at-risk',
    push_group_name='Credit at risk (warehouse)',
    push_mode='add_only',
    max_remove_fraction=0.0,
    adopt_existing='add_only'
) }}

-- 5 * balance > 4 * limit is "balance above 80% of limit" in exact integer arithmetic.
select
    tenant_uid,
    customer_uid
from {{ ref('stg_customers') }} as customers
where credit_limit > 0
  and credit_balance * 5 > credit_limit * 4
