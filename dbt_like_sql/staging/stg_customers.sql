{{ config(
    materialized='incremental',
    description='Current version of every customer, typed, with credit and consent flags flattened.'
) }}

with current_customers as (
    select *
    from {{ source('flowretail', 'customer_snapshots') }}
    where valid_to is null
),

consent_flags as (
    select
        tenant_uid,
        customer_uid,
        bool_or(status) filter (where consent_name = 'newsletter') as newsletter,
        bool_or(status) filter (where consent_name = 'sms') as sms,
        bool_or(status) filter (where consent_name = 'email_marketing') as email_marketing
    from {{ ref('stg_customer_consents') }}
    group by tenant_uid, customer_uid
)

select
    customers.tenant_uid,
    customers.customer_uid,
    customers.customer_type,
    customers.display_name,
    customers.firstname,
    customers.lastname,
    customers.company_name,
    customers.email,
    customers.mobile,
    customers.address,
    customers.postal_code,
    customers.city,
    customers.country_code,
    customers.vat_number,
    customers.external_id,
    customers.loyalty_id,
    customers.customer_parent_uid,
    customers.pricelist_uid,
    customers.origin,
    customers.payment_terms,
    -- Only JSON numbers count: a missing or null credit object gives NULL, not a cast error.
    case
        when jsonb_typeof(customers.credit -> 'limit') = 'number'
            then (customers.credit ->> 'limit')::numeric::bigint
    end as credit_limit,
    case
        when jsonb_typeof(customers.credit -> 'balance') = 'number'
            then (customers.credit ->> 'balance')::numeric::bigint
    end as credit_balance,
    coalesce(consent_flags.newsletter, false) as has_newsletter_consent,
    coalesce(consent_flags.sms, false) as has_sms_consent,
    coalesce(consent_flags.email_marketing, false) as has_email_marketing_consent,
    customers.created_at,
    customers.last_modified_at,
    customers.valid_from as version_valid_from
from current_customers as customers
left join consent_flags
    on consent_flags.tenant_uid = customers.tenant_uid
    and consent_flags.customer_uid = customers.customer_uid
