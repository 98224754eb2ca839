"""Delivery: the outbox, its retry policy, message assembly (SR, ORU) and resend."""
