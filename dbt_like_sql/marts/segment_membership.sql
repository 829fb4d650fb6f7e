{{ config(
    materialized='view',
    description="Every segment's members with the customer group the segment is pushed to."
) }}

{#-
    segments() lists the models in segments/ with their push config (name, push_to_group_uid, ...),
    so a new segment appears here without editing this file. The runner provides it; under dbt a
    project macro named segments() returning the same list from graph.nodes plays that role.
    Quoting the values is safe: model names are [a-z0-9_] and push_to_group_uid is validated
    against ^[A-Za-z0-9_-]+$ when the project loads.
    dbt fills graph.nodes only when it executes, so for dbt the line below names the segments this
    model depends on (a new segment must be added there; the dbt test in make test-all checks it).
-#}
-- depends_on: {{ ref('b2b_credit_customers') }}, {{ ref('credit_at_risk') }}, {{ ref('newsletter_subscribers') }}
{%- for segment in segments() %}
{%- if not loop.first %}

union all
{% endif %}
select
    '{{ segment.name }}'::text as segment,
    members.tenant_uid,
    members.customer_uid,
    {% if segment.push_to_group_uid %}'{{ segment.push_to_group_uid }}'::text{% else %}null::text{% endif %} as target_group_uid
from {{ ref(segment.name) }} as members
{%- else %}
select
    null::text as segment,
    null::text as tenant_uid,
    null::text as customer_uid,
    null::text as target_group_uid
where false
{%- endfor %}
