"""One router per concern: embed, classify, similarity, models, health (and metrics)."""
