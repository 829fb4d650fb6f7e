{{ config(
    materialized='incremental',
    description='Customers whose latest newsletter consent is granted.',
    push_to_group_uid='segment-newsletter-subscribers',
    push_group_name='Newsletter subscribers (warehouse)',
    push_mode='mirror',
    max_remove_fraction=0.2,
    adopt_existing='add_only'
) }}

select
    tenant_uid,
    customer_uid
from {{ ref('stg_customers') }} as customers
where has_newsletter_consent
