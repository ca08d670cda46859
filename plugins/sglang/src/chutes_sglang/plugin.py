"""Entry point ``sglang``: the hooks that make ``build_sglang_chute`` a chutes template.

They register the builder, pin SGLang in the default image of its chutes,
and keep those chutes off the network once started. Import stays cheap,
since every chutes process loads it.
"""

from chutes_core.openai_template import TemplateHooks

register_templates, build_image, egress_policy = TemplateHooks(
    "chutes_sglang.template:SGLANG"
).hooks()
