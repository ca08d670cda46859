"""The chutes plugin for vLLM (entry point ``vllm``).

Registers ``build_vllm_chute``, gives its chutes an image with vLLM pinned
(unless they name an image), and closes their outbound network after
startup. Every chutes process that loads plugins imports this module: it
imports no engine, only the light template module.
"""

from chutes_core.engines.hooks import TemplateHooks

register_templates, build_image, egress_policy = TemplateHooks.for_engine(
    "chutes_vllm.template:VLLM"
).hooks()
