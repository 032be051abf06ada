"""Talking to the Gemini API: the transport, the online and Batch/Files clients, requests out and
answers in."""
