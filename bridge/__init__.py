"""smstools-bridge: Smstools SMS/WhatsApp webhooks to Slack and Telegram threads."""

__version__ = "0.1.0"
