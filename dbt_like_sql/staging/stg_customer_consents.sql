{{ config(
    materialized='incremental',
    description='One row per current customer and consent name: the latest status of that consent.'
) }}

-- The consents array keeps every consent event; the entry with the latest createdAt wins.
-- Equal createdAt: the entry later in the array wins (the API appends newer events).
with current_customers as (
    select
        tenant_uid,
        customer_uid,
        case when jsonb_typeof(consents) = 'array' then consents else '[]'::jsonb end as consents
    from {{ source('flowretail', 'customer_snapshots') }}
    where valid_to is null
),

consent_events as (
    select
        customers.tenant_uid,
        customers.customer_uid,
        event.entry ->> 'name' as consent_name,
        event.entry ->> 'consentUid' as consent_uid,
        case when jsonb_typeof(event.entry -> 'status') = 'boolean' then (event.entry ->> 'status')::boolean end
            as status,
        event.entry ->> 'source' as source,
        (event.entry ->> 'createdAt')::timestamptz as created_at,
        event.entry_position
    from current_customers as customers
    cross join lateral jsonb_array_elements(customers.consents) with ordinality as event (entry, entry_position)
    where jsonb_typeof(event.entry) = 'object'
      and event.entry ->> 'name' is not null
),

ranked_events as (
    select
        consent_events.*,
        row_number() over (
            partition by tenant_uid, customer_uid, consent_name
            order by created_at desc nulls last, entry_position desc
        ) as recency_rank
    from consent_events
)

select
    tenant_uid,
    customer_uid,
    consent_name,
    consent_uid,
    status,
    source,
    created_at
from ranked_events
where recency_rank = 1
