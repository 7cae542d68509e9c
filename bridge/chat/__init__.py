"""Chat adapters: one thin translator per platform (Slack, Telegram, console)."""
