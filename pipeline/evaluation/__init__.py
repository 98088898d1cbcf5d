"""Scoring: metrics with known definitions (`evaluate`), the shop floor's scores
(`shop_floor`) and the pictures people look at (`report`)."""
