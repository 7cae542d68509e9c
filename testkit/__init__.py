"""What tests/ and bench/ both run the bridge against: fake Slack and Telegram servers that
speak the real wire formats (`testkit.fakes`), and real `smsbridge` child processes
(`testkit.processes`). Not part of the installed package."""
