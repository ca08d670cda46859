"""The hooks. Every chutes process imports this module, so it imports nothing heavy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chutes_core.engines.hooks import TemplateHooks, TemplateSet

if TYPE_CHECKING:
    from chutes_core import Chute, Image

#: What the default image installs besides chutes and this plugin: the versions tested.
ENGINE_PINS = (
    "torch==2.13.0",
    "transformers==5.24.0",
    "soundfile==0.14.0",
    "lameenc==1.9.0",
    "scipy==1.17.1",
    "python-multipart==0.0.34",
)


def audio_image(chute: Chute) -> Image:
    """The engine pinned, plus ffmpeg (decodes uploads libsndfile cannot: m4a, webm...)."""
    from chutes_core.engines.images import plugin_image

    image = plugin_image(chute, ENGINE_PINS, module=__name__)
    return image.set_user("root").apt_install(["ffmpeg"]).set_user("chutes")


# Weights are fetched during startup; serving needs no network.
_TEMPLATES = TemplateSet(
    TemplateHooks(
        "whisper",
        "chutes_audio.whisper:build_whisper_chute",
        description="OpenAI /v1/audio/transcriptions (Whisper, transformers)",
        image=audio_image,
        egress=False,
    ),
    TemplateHooks(
        "tts",
        "chutes_audio.speech:build_tts_chute",
        description="OpenAI /v1/audio/speech (transformers text-to-speech)",
        image=audio_image,
        egress=False,
    ),
)


register_templates, build_image, egress_policy = _TEMPLATES.hooks()
