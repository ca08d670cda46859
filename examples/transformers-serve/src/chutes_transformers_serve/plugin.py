"""The hooks. Imported by every chutes process, so it imports nothing heavy."""

from chutes_core.engines.hooks import TemplateHooks

TEMPLATE = "transformers_serve"
BUILDER = "chutes_transformers_serve.template:build_transformers_serve_chute"

# Weights are fetched during startup; serving needs no network. The image gets
# the engine (this plugin's `engine` extra, pinned) with the plugin itself.
register_templates, build_image, egress_policy = TemplateHooks(
    TEMPLATE,
    BUILDER,
    description="any causal LM behind `transformers serve` (OpenAI API, CPU or GPU)",
    requirements=["transformers[serving]==5.23.0", "accelerate"],
    egress=False,
).hooks()
