{{ config(
    materialized='incremental',
    description='Every current customer group with its current member count (0 for empty groups).'
) }}

select
    groups.tenant_uid,
    groups.customer_group_uid,
    groups.name as customer_group_name,
    groups.created_by,
    groups.created_at,
    groups.last_modified_by,
    groups.last_modified_at,
    count(memberships.customer_uid) as member_count
from {{ source('flowretail', 'customer_groups') }} as groups
left join {{ source('flowretail', 'customer_group_memberships') }} as memberships
    on memberships.tenant_uid = groups.tenant_uid
    and memberships.customer_group_uid = groups.customer_group_uid
group by
    groups.tenant_uid,
    groups.customer_group_uid,
    groups.name,
    groups.created_by,
    groups.created_at,
    groups.last_modified_by,
    groups.last_modified_at
