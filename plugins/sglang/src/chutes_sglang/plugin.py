"""Entry point ``sglang``: the hooks that make ``build_sglang_chute`` a chutes template.

They register the builder, pin SGLang in the default image of its chutes
(unless they name an image), and keep those chutes off the network once
started. Import stays cheap, since every chutes process loads it.
"""

from chutes_core.engines.hooks import TemplateHooks

register_templates, build_image, egress_policy = TemplateHooks.for_engine(
    "chutes_sglang.template:SGLANG"
).hooks()
