"""The model side: settings, persona and a Gemini Live session behind a small interface."""
