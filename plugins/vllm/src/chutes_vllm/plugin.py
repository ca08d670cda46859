"""The chutes plugin for vLLM (entry point ``vllm``).

Registers ``build_vllm_chute``, gives its chutes an image with vLLM pinned,
and closes their outbound network after startup. Every chutes process that
loads plugins imports this module: it imports no engine, only the light
template module.
"""

from chutes_core.openai_template import TemplateHooks

register_templates, build_image, egress_policy = TemplateHooks("chutes_vllm.template:VLLM").hooks()
