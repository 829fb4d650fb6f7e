{{ config(
    materialized='incremental',
    description="Members per group per UTC day, from the group's first membership day to the day of the build."
) }}

-- Days are UTC days, whatever the session time zone. A membership period [valid_from, valid_to)
-- counts for a day when it is open at the end of that day: it started before the next UTC
-- midnight and had not ended before it.
with periods as (
    select tenant_uid, customer_group_uid, customer_uid, valid_from, valid_to
    from {{ source('flowretail', 'customer_group_membership_history') }} as history
),

group_first_days as (
    select
        tenant_uid,
        customer_group_uid,
        (min(valid_from) at time zone 'UTC')::date as first_day
    from periods
    group by tenant_uid, customer_group_uid
),

group_days as (
    select
        group_first_days.tenant_uid,
        group_first_days.customer_group_uid,
        series.day_start::date as membership_date,
        (series.day_start + interval '1 day') at time zone 'UTC' as day_end
    from group_first_days
    -- timestamp (not timestamptz) bounds keep every step exactly one calendar day.
    cross join lateral generate_series(
        group_first_days.first_day::timestamp,
        (now() at time zone 'UTC')::date::timestamp,
        interval '1 day'
    ) as series (day_start)
)

select
    group_days.tenant_uid,
    group_days.customer_group_uid,
    group_days.membership_date,
    count(periods.customer_uid) as member_count
from group_days
left join periods
    on periods.tenant_uid = group_days.tenant_uid
    and periods.customer_group_uid = group_days.customer_group_uid
    and periods.valid_from < group_days.day_end
    and (periods.valid_to is null or periods.valid_to >= group_days.day_end)
group by group_days.tenant_uid, group_days.customer_group_uid, group_days.membership_date
