{{ config(
    materialized='view',
    description='Current customer group memberships with the name of the group.'
) }}

select
    memberships.tenant_uid,
    memberships.customer_group_uid,
    groups.name as customer_group_name,
    memberships.customer_uid,
    memberships._loaded_at as loaded_at
from {{ source('flowretail', 'customer_group_memberships') }} as memberships
left join {{ source('flowretail', 'customer_groups') }} as groups
    on groups.tenant_uid = memberships.tenant_uid
    and groups.customer_group_uid = memberships.customer_group_uid
