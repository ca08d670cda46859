"""The shared engine toolkit: what every engine plugin builds its templates from.

One module per concern:

- :mod:`~chutes_core.engines.template`: ``OpenAIEngineTemplate`` and ``EngineLaunch``,
  an OpenAI-compatible engine as a chute template.
- :mod:`~chutes_core.engines.hooks`: ``TemplateHooks``, a template plugin's hooks.
- :mod:`~chutes_core.engines.settings`: ``ChuteSettings``, the chute settings every builder takes.
- :mod:`~chutes_core.engines.flags`: ``engine_args`` to command-line flags, owned flags refused.
- :mod:`~chutes_core.engines.model`: ``check_revision`` and ``chute_name_for``.
- :mod:`~chutes_core.engines.hub`: ``fetch_model`` (and ``fetch_model_async``), ``offline_env``.
- :mod:`~chutes_core.engines.devices`: ``gpu_visible``.
- :mod:`~chutes_core.engines.routes`: ``OpenAIRoute`` and passthrough cords.
- :mod:`~chutes_core.engines.process`: ``OpenAIServerEngine``, the engine subprocess.
- :mod:`~chutes_core.engines.images`: a template's pinned default image.

Importing any of them imports no engine, torch or FastAPI.
"""
