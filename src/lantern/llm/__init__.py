"""LLM clients behind one interface, with a persistent response cache."""
