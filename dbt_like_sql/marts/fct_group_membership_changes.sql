{{ config(
    materialized='incremental',
    description='One row per customer joining or leaving a group, from the membership history.'
) }}

-- A period's valid_from is when the customer joined; a closed period's valid_to is when they left.
select
    tenant_uid,
    customer_group_uid,
    customer_uid,
    'joined'::text as change,
    valid_from as changed_at
from {{ source('flowretail', 'customer_group_membership_history') }} as history

union all

select
    tenant_uid,
    customer_group_uid,
    customer_uid,
    'left'::text as change,
    valid_to as changed_at
from {{ source('flowretail', 'customer_group_membership_history') }} as history
where valid_to is not null
