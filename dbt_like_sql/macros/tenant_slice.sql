{#-
    Tenant slices under dbt, as the runner builds them: run with `--vars '{tenant_uid: T}'`, an
    incremental model (strategy delete+insert, unique_key tenant_uid, see dbt_project.yml) reads
    every ref() and source() filtered on tenant_uid = T, so its SQL stays the same for one tenant or
    all. Views, tests and models declared tenant_scope='all' read the whole relations.
-#}
{% macro tenant_slice(relation) %}
    {%- set tenant = var("tenant_uid", none) -%}
    {%- if execute and tenant is not none and model is defined and model.resource_type == "model"
          and config.get("materialized") == "incremental" and config.get("tenant_scope", "tenant") == "tenant" -%}
        {{ return("(select * from " ~ relation ~ " where tenant_uid = '" ~ (tenant | string | replace("'", "''")) ~ "')") }}
    {%- endif -%}
    {{ return(relation) }}
{% endmacro %}

{% macro ref(model_name) %}
    {{ return(tenant_slice(builtins.ref(model_name))) }}
{% endmacro %}

{% macro source(source_name, table_name) %}
    {{ return(tenant_slice(builtins.source(source_name, table_name))) }}
{% endmacro %}
