"""The phone side: Twilio Media Streams, audio conversion, and the per-call bridge."""
