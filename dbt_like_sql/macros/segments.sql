{#-
    The runner provides segments() to models; this is the same function for dbt: the models in
    segments/ with their push config, by name. dbt fills `graph` only when it executes, so a model
    looping over segments() also names them in `-- depends_on:` lines for dbt to order the build.
-#}
{% macro segments() %}
    {%- set found = [] -%}
    {%- if execute -%}
        {%- set models = graph.nodes.values() | selectattr("resource_type", "equalto", "model") -%}
        {%- for node in models | sort(attribute="name") -%}
            {%- if node.original_file_path.replace("\\", "/").startswith("segments/") -%}
                {%- do found.append({
                    "name": node.name,
                    "push_to_group_uid": node.config.get("push_to_group_uid"),
                    "push_group_name": node.config.get("push_group_name"),
                    "push_mode": node.config.get("push_mode"),
                    "max_remove_fraction": node.config.get("max_remove_fraction"),
                    "adopt_existing": node.config.get("adopt_existing"),
                }) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(found) }}
{% endmacro %}
