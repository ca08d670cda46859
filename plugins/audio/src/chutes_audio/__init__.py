"""chutes-audio: speech to text (Whisper) and text to speech, as OpenAI-compatible chutes."""
